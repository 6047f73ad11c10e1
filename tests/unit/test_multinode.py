"""The multi-node layout's pure parts (shared/multinode.py): every port used once."""

from __future__ import annotations

import dataclasses

import yaml

from shared import cluster, cluster_main, multinode
from shared.registry import PROJECT_ROOT
from tests import test_multinode


def _ports(head: cluster.ClusterPorts, worker_base: int, worker_http: int) -> list[int]:
    used = list(dataclasses.astuple(head))
    for index in range(len(multinode.WORKER_NAMES)):
        worker = multinode.WorkerPorts.block(worker_base + 10 * index, worker_http + index)
        used += dataclasses.astuple(worker)
    return used


def test_no_two_nodes_share_a_port() -> None:
    layouts = {
        "make cluster": _ports(cluster.ClusterPorts(), cluster_main.WORKER_BASE, 8001),
        "tests": _ports(
            test_multinode.PORTS, test_multinode.WORKER_BASE, test_multinode.WORKER_HTTP
        ),
    }
    for name, used in layouts.items():
        assert len(used) == len(set(used)), name


def test_the_config_gets_a_proxy_on_every_node_and_is_otherwise_unchanged() -> None:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    multi = multinode.multinode_config(config)
    assert multi["proxy_location"] == "EveryNode"
    assert {k: v for k, v in multi.items() if k != "proxy_location"} == {
        k: v for k, v in config.items() if k != "proxy_location"
    }

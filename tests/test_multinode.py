"""The real serve_config on a real 3-node Ray cluster on this machine (shared/multinode.py).

A head that does no model work and two worker nodes, each with its own Serve proxy
(`proxy_location: EveryNode`). The replicas spread over both workers, every node's proxy
answers, the shared rate limit stays exact with requests alternating between the nodes, and the
loss of a whole worker node under load costs no hung request and needs no restart.

These tests run first (conftest.py), on a cluster of their own that is gone before the session's
one-node cluster starts: two clusters at once would not fit this machine's two cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from shared import cluster, keys, multinode
from shared.assets import example_image
from tests import conftest
from tests.oracle import assert_matches_oracle
from tests.traffic import Traffic

pytestmark = pytest.mark.multinode

# Away from the session's cluster (conftest.PORTS) and a developer's `make serve` or `make cluster`.
PORTS = cluster.ClusterPorts.block(conftest.PORTS.gcs + 3000)
WORKER_BASE = conftest.PORTS.gcs + 3010  # node_a's six ports, then node_b's
WORKER_HTTP = conftest.PORTS.gcs + 3030  # node_a's proxy, then node_b's
ENDPOINT = "/endpoints/yolo26n/predict"
SHARED = "/api/models/yolo26n/predict"
LIMIT = 20


@dataclass
class Proxy:
    """One node's Serve proxy, in the shape tests/traffic.py sends to."""

    base_url: str
    key: str

    def url(self, path: str) -> str:
        return self.base_url + path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


@dataclass
class Cluster:
    multi: multinode.MultiNodeCluster
    key: str
    keys_file: Path
    config: dict

    def proxy(self, node: str) -> Proxy:
        """The proxy of the head ("head") or of a worker (its name)."""
        if node == "head":
            return Proxy(self.multi.base_url, self.key)
        return Proxy(self.multi.worker(node).base_url, self.key)

    def replicas(self, app: str, deployment: str) -> list[dict]:
        apps = cluster.serve_applications(self.multi.ports)
        found = apps.get(app, {}).get("deployments", {}).get(deployment, {})
        return [r for r in found.get("replicas", []) if r["state"] == "RUNNING"]

    def all_replicas(self) -> set[tuple[str, str, int, str]]:
        """(deployment, replica id, pid, node id) of every running replica of every app."""
        return {
            (f"{app}/{name}", r["replica_id"], r["pid"], r["node_id"])
            for app, details in cluster.serve_applications(self.multi.ports).items()
            for name, deployment in details.get("deployments", {}).items()
            for r in deployment.get("replicas", [])
            if r["state"] == "RUNNING"
        }

    def head_node_id(self) -> str:
        return next(n["node_id"] for n in multinode.nodes(self.multi.ports) if n["is_head_node"])


def multinode_config(keys_file: Path, state_dir: Path, http_port: int) -> dict:
    """The session's test config with one proxy per node, and the endpoint as the KubeRay
    manifest runs it (docs/scaling.md): two ingress replicas, here beside two model replicas."""
    config = multinode.multinode_config(conftest.test_config(keys_file, state_dir))
    config["http_options"]["port"] = http_port
    for app in config["applications"]:
        if app["name"] == "yolo26n":
            for deployment in app["deployments"]:
                if deployment["name"] == "Model":
                    deployment["num_replicas"] = 2
            app["deployments"].append({"name": "Ingress", "num_replicas": 2})
    return config


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("multinode")
    keys_file = tmp / "keys.json"
    key = keys.create_key(keys_file, "multinode", rate_limit=100_000)
    multi = multinode.start(PORTS, WORKER_BASE, WORKER_HTTP)
    try:
        config = multinode_config(keys_file, tmp / "state", multi.ports.http)
        config_path = tmp / "serve_config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        cluster.deploy(config_path, multi.ports)
        cluster.wait_running(multi.ports, [a["name"] for a in config["applications"]])
        nodes = Cluster(multi, key, keys_file, config)
        for node in ("head", *multinode.WORKER_NAMES):
            _wait_answering(nodes.proxy(node))
        yield nodes
    finally:
        multi.stop()


def _wait_answering(proxy: Proxy, timeout_s: float = 60) -> None:
    """A worker's proxy starts once its node has replicas: wait for it to route."""
    deadline = time.monotonic() + timeout_s
    while not _answers(proxy):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no proxy answers at {proxy.base_url}")
        time.sleep(0.5)


def _predict(proxy: Proxy, path: str, image: bytes, key: str | None = None, **fields):
    return requests.post(
        proxy.url(path),
        headers=proxy.headers(key),
        files={"file": ("image.jpg", image)},
        data={k: str(v) for k, v in fields.items()},
        timeout=120,
    )


def _new_key(nodes: Cluster, name: str) -> str:
    key = keys.create_key(nodes.keys_file, f"multinode-{name}-{time.monotonic_ns()}")
    time.sleep(keys.REFRESH_S + 0.5)  # every ingress replica has read the store
    return key


def _burst_alternating(nodes: Cluster, key: str, image: bytes, n: int) -> list[int]:
    proxies = [nodes.proxy(node) for node in ("head", *multinode.WORKER_NAMES)]
    alive = [p for p in proxies if _answers(p)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        responses = list(
            pool.map(
                lambda i: _predict(alive[i % len(alive)], SHARED, image, key=key, imgsz=32),
                range(n),
            )
        )
    return sorted(r.status_code for r in responses)


def _answers(proxy: Proxy) -> bool:
    try:
        return requests.get(proxy.url("/-/healthz"), timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_head_does_no_model_work_and_replicas_spread_over_both_workers(
    three_nodes: Cluster,
) -> None:
    workers = multinode.node_ids(three_nodes.multi.ports)
    endpoint = three_nodes.replicas("yolo26n", "Model")
    assert len(endpoint) == 2
    assert {r["node_id"] for r in endpoint} == set(workers.values())
    head = three_nodes.head_node_id()
    for app, deployment in [("shared", "ModelPool"), ("yolo26n-seg", "Model")]:
        assert all(r["node_id"] != head for r in three_nodes.replicas(app, deployment))


def test_every_nodes_proxy_answers_with_the_same_detections(three_nodes: Cluster) -> None:
    bus = example_image("bus.jpg")
    for node in ("head", *multinode.WORKER_NAMES):
        for path in (ENDPOINT, SHARED):
            response = _predict(three_nodes.proxy(node), path, bus.read_bytes())
            assert response.status_code == 200, (node, path, response.text)
            assert_matches_oracle(response.json(), "yolo26n", bus)


def test_the_shared_limit_stays_exact_across_the_nodes_proxies(
    three_nodes: Cluster, tiny_png: bytes
) -> None:
    key = _new_key(three_nodes, "exact")
    assert _burst_alternating(three_nodes, key, tiny_png, 25) == [200] * LIMIT + [429] * 5


def _victim(nodes: Cluster) -> tuple[str, str]:
    """(the worker to lose, the one that stays): the one running a limiter shard or a shared
    ingress replica if either does, so that the test loses them too."""
    workers = multinode.node_ids(nodes.multi.ports)
    shared = [r for r in nodes.all_replicas() if r[0].startswith(("shared/Limiter", "shared/Ing"))]
    hosting = [name for name, node_id in workers.items() if any(r[3] == node_id for r in shared)]
    lost = hosting[0] if hosting else "node_b"
    return lost, next(name for name in workers if name != lost)


def _running_counts(nodes: Cluster) -> dict[str, int]:
    counts: dict[str, int] = {}
    for deployment, *_ in nodes.all_replicas():
        counts[deployment] = counts.get(deployment, 0) + 1
    return counts


def test_losing_a_worker_node_under_load(three_nodes: Cluster, tiny_png: bytes) -> None:
    """SIGKILL to every process of one worker node while clients keep sending to the others."""
    ports = three_nodes.multi.ports
    lost_name, survivor_name = _victim(three_nodes)
    workers = multinode.node_ids(ports)
    survivor, lost_id = workers[survivor_name], workers[lost_name]
    before = three_nodes.all_replicas()
    elsewhere = {r for r in before if r[3] != lost_id}
    lost_deployments = sorted({r[0] for r in before if r[3] == lost_id})
    counts_before = _running_counts(three_nodes)
    bus = example_image("bus.jpg").read_bytes()
    timeout = float(
        next(a for a in three_nodes.config["applications"] if a["name"] == "yolo26n")["args"].get(
            "model_timeout_s", 30
        )
    )
    loads = [
        Traffic(three_nodes.proxy(node), ENDPOINT, bus, clients=2, timeout=timeout + 30, imgsz=320)
        for node in ("head", survivor_name)
    ]
    shared_load = Traffic(
        three_nodes.proxy("head"), SHARED, tiny_png, clients=1, timeout=timeout + 30, imgsz=32
    )
    with loads[0], loads[1], shared_load:
        time.sleep(3)
        killed_at = time.monotonic()
        three_nodes.multi.worker(lost_name).kill()
        # Recovered: the endpoint's two replicas running on the survivor, and requests through
        # both remaining proxies answered since. The bound is 30 s; the wait allows
        # more, so that a slow run reports its figure instead of failing on time.
        noticed_at = recovered_at = None
        while time.monotonic() < killed_at + 120:
            endpoint = three_nodes.replicas("yolo26n", "Model")
            now = time.monotonic()
            if noticed_at is None and len(endpoint) < 2:
                noticed_at = now
            rescheduled = [r for r in endpoint if r["node_id"] == survivor]
            if len(rescheduled) == 2 and all(load.served_after(now - 2) for load in loads):
                recovered_at = now
                break
            time.sleep(0.25)
        # Everything that was on the lost node runs again elsewhere.
        while _running_counts(three_nodes) != counts_before and time.monotonic() < killed_at + 180:
            time.sleep(0.5)
        restored_at = time.monotonic()
        time.sleep(2)
    assert recovered_at is not None, "the endpoint's replicas were not rescheduled"
    served = [min(o.done for o in load.served_after(killed_at)) for load in (*loads, shared_load)]
    print(
        f"{lost_name} lost ({', '.join(lost_deployments)}); after the kill, in s: Serve saw the "
        f"endpoint's replica gone {noticed_at - killed_at if noticed_at else -1:.1f}, every load "
        f"served again {max(served) - killed_at:.1f}, the endpoint at 2 replicas on "
        f"{survivor_name} {recovered_at - killed_at:.1f}, everything rescheduled "
        f"{restored_at - killed_at:.1f}"
    )

    outcomes = [o for load in (*loads, shared_load) for o in load.outcomes]
    assert outcomes and all(o.status in (200, 503) for o in outcomes), {
        (o.status, o.detail[:120]) for o in outcomes if o.status not in (200, 503)
    }
    assert all(o.json_error for o in outcomes if o.status == 503)
    assert all(load.served_after(killed_at) for load in (*loads, shared_load))

    # Nothing else needed a restart: every app runs, every replica that was not on the lost
    # node is the same process, everything that was there runs again elsewhere, and every
    # limiter shard (the lost node's too) counts again, exactly.
    assert set(cluster.app_statuses(ports).values()) == {"RUNNING"}
    assert elsewhere <= three_nodes.all_replicas()
    assert _running_counts(three_nodes) == counts_before
    assert all(r[3] != lost_id for r in three_nodes.all_replicas())
    key = _new_key(three_nodes, "after-loss")
    assert _burst_alternating(three_nodes, key, tiny_png, 25) == [200] * LIMIT + [429] * 5
    control = three_nodes.replicas("shared", "ControlPlane")
    assert [r["node_id"] for r in control] == [three_nodes.head_node_id()]
    listing = requests.get(
        three_nodes.proxy("head").url("/api/deployments/default"),
        headers=three_nodes.proxy("head").headers(),
        timeout=30,
    )
    assert listing.status_code == 200, listing.text

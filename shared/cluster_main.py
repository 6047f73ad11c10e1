"""`yolo-endpoints cluster`: the real serve_config on a 3-node Ray cluster on this machine.

What `make serve` does, on a head that does no model work and two worker nodes
(shared/multinode.py), with one Serve proxy per node: the head's on the config's port, the
workers' on the next two. For trying out placement, node loss and what KubeRay will do; one
machine's cores are still all there is.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import yaml

from shared import cluster, keys, multinode, prometheus, weights
from shared.registry import PROJECT_ROOT, load_registry
from shared.serve_main import (
    curl_example,
    print_prometheus_and_key,
    served_keys_file,
    start_prometheus,
    stop_like_ctrl_c,
)

WORKER_BASE = 6400  # node_a's ports 6400-6405, node_b's 6410-6415


def run_cluster(config_path: Path) -> int:
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    # Started from a background job, this process inherits SIGINT ignored: Ctrl-C must stop it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    weights.fetch(load_registry().values())
    config = multinode.multinode_config(yaml.safe_load(config_path.read_text()))
    keys_path = served_keys_file(config)
    new_key = None if keys.read_store(keys_path) else keys.create_key(keys_path, "default")
    ports = cluster.ClusterPorts(http=int(config.get("http_options", {}).get("port", 8000)))
    state = PROJECT_ROOT / ".state"
    state.mkdir(exist_ok=True)
    deployed = state / "multinode_serve_config.yaml"
    deployed.write_text(yaml.safe_dump(config))
    try:
        multi = multinode.start(ports, WORKER_BASE)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    prom = None
    try:
        prom = start_prometheus(ports, [w.ports.metrics for w in multi.workers])
        cluster.deploy(deployed, ports)
        cluster.wait_running(ports, [a["name"] for a in config["applications"]])
        print("\nYOLO Endpoints is up on 3 Ray nodes (a head and two workers):")
        print(f"  head's proxy          {multi.base_url}/")
        for worker in multi.workers:
            name = f"{worker.name}'s proxy"
            print(f"  {name:<21} {worker.base_url}/  (pgid {worker.process.pid})")
        print(f"  Ray dashboard         {ports.dashboard_url}")
        print_prometheus_and_key(prom, ports, new_key, keys_path)
        print("\nLose a node: kill -9 -<pgid>. Try it:")
        print(curl_example(multi.base_url, new_key or "$YOLO_API_KEY", "yolo26n") + "\n")
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        if prom is not None:
            prometheus.stop(prom)
        multi.stop()

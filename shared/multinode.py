"""A real multi-node Ray cluster on one machine: `make cluster`, and the tests' multi-node fixture.

A head that does no model work (`--num-cpus=0`: only Serve's controller, the proxy, the control
plane and zero-CPU limiter shards fit there) and worker nodes joined with `ray start --address`.
Each worker has its own ports, its own temp dir, its own HTTP proxy port and a custom resource
named after it, so placement can be asserted through Ray's state API. Each node runs in a
process group of its own: SIGKILL to the group is the loss of that node (raylet, agents and
every worker process on it at once), which is what the node-loss test does.

Serve runs one proxy per node (`proxy_location: EveryNode`). Colocated proxies cannot all bind
`http_options.port`, so each worker node's proxy binds the port its node's environment names
(`RAY_SERVE_WORKER_PROXY_HTTP_PORT`, read by the proxy process; the head keeps the config's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from shared import cluster

# The GCS marks a node dead after this many missed health checks, one per period. Ray's
# defaults (5 checks 3 s apart, after a 5 s delay) leave a lost node's actors looking alive
# for over 15 s, and Serve replaces a replica only once Ray calls it dead.
NODE_HEALTH_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
WORKER_NAMES = ("node_a", "node_b")
WORKER_CPUS = 8  # logical: each worker alone must hold every replica once the other is lost


@dataclass(frozen=True)
class WorkerPorts:
    node_manager: int
    object_manager: int
    metrics: int
    agent: int
    agent_grpc: int
    runtime_env_agent: int
    http: int  # this node's Serve proxy

    @classmethod
    def block(cls, base: int, http: int) -> WorkerPorts:
        """Six consecutive ports from `base`, and the proxy's own."""
        return cls(*range(base, base + 6), http)


@dataclass
class WorkerNode:
    name: str  # also its custom resource
    ports: WorkerPorts
    process: subprocess.Popen
    temp_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def kill(self) -> None:
        """The node is lost: every process of it killed at once, nothing shut down cleanly."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        cluster.stop_owned_head(self.process)  # `ray start --block` stops its node on SIGTERM


@dataclass
class MultiNodeCluster:
    ports: cluster.ClusterPorts
    head: subprocess.Popen
    head_temp_dir: Path
    workers: list[WorkerNode] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def worker(self, name: str) -> WorkerNode:
        return next(w for w in self.workers if w.name == name)

    def stop(self) -> None:
        for worker in self.workers:  # all told at once: each takes seconds to shut down
            if worker.process.poll() is None:
                os.killpg(worker.process.pid, signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
        cluster.stop_owned_head(self.head)
        for directory in [self.head_temp_dir, *(w.temp_dir for w in self.workers)]:
            shutil.rmtree(directory, ignore_errors=True)


def _temp_dir(name: str) -> Path:
    # Short: Ray's Unix sockets live under it, and a socket path has at most 107 bytes.
    return Path(tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp"))


def nodes(ports: cluster.ClusterPorts) -> list[dict]:
    """Ray's state API's nodes (node_id, state, resources_total, ...), [] while unreachable."""
    try:
        with urllib.request.urlopen(
            f"{ports.dashboard_url}/api/v0/nodes?limit=100&detail=true", timeout=5
        ) as response:
            return json.load(response)["data"]["result"]["result"]
    except (OSError, ValueError, KeyError):
        return []


def node_ids(ports: cluster.ClusterPorts) -> dict[str, str]:
    """Worker name (its custom resource) -> node id, for the nodes alive now."""
    return {
        name: node["node_id"]
        for node in nodes(ports)
        if node.get("state") == "ALIVE"
        for name in node.get("resources_total", {})
        if name in WORKER_NAMES
    }


def start_worker(
    ports: cluster.ClusterPorts, name: str, worker_ports: WorkerPorts, num_cpus: int
) -> WorkerNode:
    temp_dir = _temp_dir(name)
    args = [
        str(cluster.BIN / "ray"),
        "start",
        f"--address={ports.address}",
        f"--num-cpus={num_cpus}",
        f"--resources={json.dumps({name: 1})}",
        f"--temp-dir={temp_dir}",
        f"--node-manager-port={worker_ports.node_manager}",
        f"--object-manager-port={worker_ports.object_manager}",
        f"--metrics-export-port={worker_ports.metrics}",
        f"--dashboard-agent-listen-port={worker_ports.agent}",
        f"--dashboard-agent-grpc-port={worker_ports.agent_grpc}",
        f"--runtime-env-agent-port={worker_ports.runtime_env_agent}",
        "--disable-usage-stats",
        "--block",
    ]
    env = {
        **cluster.ray_env(),
        **NODE_HEALTH_ENV,
        "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(worker_ports.http),
    }
    process = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: killpg is this node's loss
    )
    return WorkerNode(name, worker_ports, process, temp_dir)


def start(
    ports: cluster.ClusterPorts,
    worker_base: int,
    worker_http: int | None = None,
    num_cpus: int = WORKER_CPUS,
    timeout_s: float = 120,
) -> MultiNodeCluster:
    """The head on `ports`, worker i on worker_base + 10 i.. with its proxy on worker_http + i
    (default: the head's HTTP port + 1); returns once every node is alive."""
    worker_http = worker_http or ports.http + 1
    head_temp = _temp_dir("head")
    head = cluster.start_owned_head(
        ports, num_cpus=0, extra_args=(f"--temp-dir={head_temp}",), extra_env=NODE_HEALTH_ENV
    )
    multi = MultiNodeCluster(ports, head, head_temp)
    try:
        for index, name in enumerate(WORKER_NAMES):
            worker_ports = WorkerPorts.block(worker_base + 10 * index, worker_http + index)
            multi.workers.append(start_worker(ports, name, worker_ports, num_cpus))
        deadline = time.monotonic() + timeout_s
        while set(node_ids(ports)) != set(WORKER_NAMES):
            dead = [w.name for w in multi.workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"worker nodes did not join (exited: {dead})")
            time.sleep(0.5)
    except BaseException:
        multi.stop()
        raise
    return multi


def multinode_config(config: dict) -> dict:
    """A serve_config for this cluster: one proxy per node (the head's on the config's port)."""
    return {**config, "proxy_location": "EveryNode"}

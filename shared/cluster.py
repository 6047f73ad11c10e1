"""Starting, checking and stopping the local Ray cluster that `make serve` and the tests use.

Serving on one machine is `ray start --head` (so Ray's metrics land on a fixed port) followed by
`serve run`/`serve deploy` against it. Ray's logical CPU count is a scheduling budget, not the
core count: on one box every replica time-shares the same cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shared.settings import DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_VIDEO_MB, apply_ultralytics_env

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class ClusterPorts:
    gcs: int = 6380
    dashboard: int = 8265
    metrics: int = 8080
    http: int = 8000
    agent: int = 52365
    client: int = 10001
    prometheus: int = 9090  # the Prometheus server beside the cluster (shared/prometheus.py)

    @classmethod
    def block(cls, base: int) -> ClusterPorts:
        """Seven consecutive ports, so that several clusters can share one machine."""
        return cls(base, base + 1, base + 2, base + 3, base + 4, base + 5, base + 6)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"


# Ray Serve's own settings for a short request path (some of those RAY_SERVE_THROUGHPUT_OPTIMIZED
# turns on): user code and the handle's router on the replica's own event loop instead of one
# thread each, and Serve's log lines (one per request per process) written to their files under
# the session's logs/serve/ only, not also to stderr, from where Ray's log monitor would ship
# every line to the driver. Read at import by every Serve process (the proxy too), so they go
# in the cluster's environment, and again in serve_config.yaml's runtime_env for clusters this
# project did not start. bench/README.md has the before and after.
SERVE_FAST_PATH_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_LOG_TO_STDERR": "0",
}

# The proxy's edge guard (deployments/edge.py): bodies capped before the proxy buffers them, and
# its own errors as JSON. Read when each proxy starts, which no application's runtime_env
# reaches, so they go in the cluster's environment only (k8s/generate.py puts them on the pods).
# The upload limits must be at least every app's `max_upload_mb` and `max_video_mb`.
EDGE_ENV = {
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "deployments.edge:middlewares",
    "YOLO_MAX_UPLOAD_MB": str(DEFAULT_MAX_UPLOAD_MB),
    "YOLO_MAX_VIDEO_MB": str(DEFAULT_MAX_VIDEO_MB),
}


# Serve's controller reports replicas it cannot place after this long (and again each period);
# the deployments control plane turns that report into a `failed` deployment, so these bound
# how long an impossible request (more CPUs or memory than any node has) sits in `deploying`.
# Read by the controller at start: the cluster's environment (and k8s/generate.py's pod env).
#
# The controller restarts a proxy after three failed health checks in a row, one per period:
# with Serve's 10 s period, a killed proxy left its port refusing connections for 22 s; with
# 1 s, 3.7 s (bench/outage.py, bench/README.md). A check of a live proxy is one actor call.
CONTROLLER_ENV = {
    "RAY_SERVE_SLOW_STARTUP_WARNING_S": "10",
    "RAY_SERVE_SLOW_STARTUP_WARNING_PERIOD_S": "5",
    "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "1",
}


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    apply_ultralytics_env(env)
    # Ray 2.60 turns token auth on by itself when ~/.ray/auth_token exists (any earlier
    # `ray.init()` may have written one); an owned local head stays as configured unless the
    # user asks for auth explicitly.
    env.setdefault("RAY_AUTH_MODE", "disabled")
    for name, value in {**SERVE_FAST_PATH_ENV, **EDGE_ENV, **CONTROLLER_ENV}.items():
        env.setdefault(name, value)
    return env


def _head_args(ports: ClusterPorts, num_cpus: int) -> list[str]:
    return [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={ports.gcs}",
        f"--num-cpus={num_cpus}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={ports.dashboard}",
        f"--metrics-export-port={ports.metrics}",
        f"--dashboard-agent-listen-port={ports.agent}",
        f"--ray-client-server-port={ports.client}",
        "--disable-usage-stats",
    ]


def start_owned_head(
    ports: ClusterPorts,
    num_cpus: int = 16,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """A head that lives exactly as long as the returned process (`stop_owned_head` ends it).

    `ray start --block` tears its processes down when signalled, so a test session can run its
    own cluster beside a developer's without `ray stop` killing both.
    """
    # Another cluster on these ports would answer the readiness check below for this one.
    if _dashboard_up(ports) or not _port_free(ports.gcs):
        raise RuntimeError(
            f"ports {ports.gcs} (Ray) or {ports.dashboard} (dashboard) are in use: another Ray "
            "cluster runs here (a `make serve` still running?); stop it first"
        )
    process = subprocess.Popen(
        [*_head_args(ports, num_cpus), *extra_args, "--block"],
        env={**ray_env(), **(extra_env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not _dashboard_up(ports):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_owned_head(process)  # never leave a half-started head holding the ports
            raise RuntimeError(f"ray head on port {ports.gcs} did not start")
        time.sleep(0.5)
    return process


def stop_owned_head(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _dashboard_up(ports: ClusterPorts) -> bool:
    try:
        with urllib.request.urlopen(f"{ports.dashboard_url}/api/version", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answers (e.g. 401 under token auth): it is up
    except (urllib.error.URLError, OSError):
        return False


def deploy(config: Path, ports: ClusterPorts) -> None:
    subprocess.run(
        [str(BIN / "serve"), "deploy", str(config), "-a", ports.dashboard_url],
        check=True,
        env=ray_env(),
        stdout=subprocess.DEVNULL,
    )


def serve_applications(ports: ClusterPorts) -> dict[str, dict]:
    """Application name -> its details from the dashboard's Serve API ({} while unreachable)."""
    try:
        with urllib.request.urlopen(
            f"{ports.dashboard_url}/api/serve/applications/", timeout=5
        ) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    return body.get("applications") or {}


def app_statuses(ports: ClusterPorts) -> dict[str, str]:
    """Application name -> status, from the dashboard's Serve API ({} while unreachable)."""
    return {name: app["status"] for name, app in serve_applications(ports).items()}


def wait_running(ports: ClusterPorts, apps: list[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = app_statuses(ports)
        if any(s == "DEPLOY_FAILED" for s in statuses.values()):
            messages = {
                name: app.get("message", "")[-2000:]
                for name, app in serve_applications(ports).items()
                if app["status"] == "DEPLOY_FAILED"
            }
            raise RuntimeError(f"deployment failed: {messages}")
        if all(statuses.get(a) == "RUNNING" for a in apps):
            return
        time.sleep(1)
    raise TimeoutError(f"applications not running after {timeout_s}s: {statuses}")

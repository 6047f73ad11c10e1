"""One real Ray Serve instance for the whole test session, on the real config and weights.

The config is serve_config.yaml with only what a test run must change: ports away from a
developer's `make serve`, a temporary key store, and short windows where tests would otherwise
sleep for minutes.
"""

from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from deployments.limiter import shard_name
from shared import cluster, keys, prometheus
from shared.assets import example_image
from shared.ratelimit import shard_of
from shared.registry import PROJECT_ROOT
from tests.replica_stats import ReplicaStats

# Several test sessions (or a `make serve`) can share a machine: each picks its own port block.
PORTS = cluster.ClusterPorts.block(int(os.environ.get("YOLO_TEST_PORT_BASE", "21000")))
RATE_LIMIT_WINDOW_S = 10
# Two limiter shards, so that every exactness test also shows keys counted exactly on either.
LIMITER_SHARDS = 2


@dataclass
class Server:
    base_url: str
    key: str
    keys_file: Path
    config: dict
    ports: cluster.ClusterPorts
    config_path: Path
    head: subprocess.Popen
    prometheus_url: str  # the session's Prometheus, scraping the head's metrics export
    prometheus: subprocess.Popen

    def restart(self) -> None:
        """The whole stack stopped and started again on the same config and state, as a
        `make serve` stopped and run again (tests that do this are `redeploys`: they go last).
        Prometheus keeps running: the new head exports on the same port, which it scrapes."""
        cluster.stop_owned_head(self.head)
        self.head = _start_and_deploy(self.config_path, self.config)

    def url(self, path: str) -> str:
        return self.base_url + path

    def limiter_of(self, key: str | None = None) -> str:
        """The name of the shared app's Limiter deployment that counts `key`."""
        record = keys.KeyRing(self.keys_file).authenticate(f"Bearer {key or self.key}")
        return shard_name(shard_of(record.id, LIMITER_SHARDS))

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def predict(
        self,
        model: str,
        image: Path | bytes,
        key: str | None = None,
        prefix: str | None = None,
        **fields,
    ) -> requests.Response:
        data = image.read_bytes() if isinstance(image, Path) else image
        path = f"{prefix}/predict" if prefix else f"/api/models/{model}/predict"
        return requests.post(
            self.url(path),
            headers=self.headers(key),
            files={"file": ("image", data)},
            data={k: str(v) for k, v in fields.items()},
            timeout=120,
        )


def test_config(keys_file: Path, state_dir: Path) -> dict:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = PORTS.http
    for app in config["applications"]:
        app.setdefault("args", {})["keys_file"] = str(keys_file)
        # Every JSON body is held to the model its route declares (deployments/response_check.py):
        # a drift between a route and its schema fails whichever live test touches it.
        env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env["YOLO_VALIDATE_RESPONSES"] = "1"
        if app["name"] == "shared":
            # The API-created deployments' records, away from a developer's `make serve`.
            app["args"]["control_plane"] = {"database": str(state_dir / "deployments.sqlite")}
            # The session's own Prometheus (the `server` fixture), not a `make serve`'s on 9090.
            app["args"]["prometheus_url"] = prometheus.url(PORTS.prometheus)
            # The real 20 per window, in a window short enough to watch roll; two ingress
            # replicas and two limiter shards, so that the limit is shown to hold across both.
            app["args"]["rate_limit"] = {
                "requests": 20,
                "window_s": RATE_LIMIT_WINDOW_S,
                "shards": LIMITER_SHARDS,
            }
            for deployment in app["deployments"]:
                if deployment["name"] == "Ingress":
                    deployment["num_replicas"] = 2
        if app["name"] == "yolo26n":
            # One fixed replica instead of autoscaling (which test_redeploy tests on an app of
            # its own): tests compare the replica's stats before and after, which only holds
            # when every call reaches the same replica.
            app["args"]["autoscaling"] = None
            # The CPU default forms no batches (a batch closes as its first request arrives,
            # after batch_wait_timeout_s: 0); a GPU-style window lets the batching tests see
            # concurrent requests grouped.
            for deployment in app["deployments"]:
                if deployment["name"] == "Model":
                    deployment["user_config"] = {"max_batch_size": 4, "batch_wait_timeout_s": 0.02}
    return config


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("serve")
    keys_file = tmp / "keys.json"
    # The main test key is exempt in practice (its own high limit), so that tests sending many
    # requests never see a 429; rate-limit tests make their own keys, which get the app's limit.
    key = keys.create_key(keys_file, "tests", rate_limit=100_000)
    config = test_config(keys_file, tmp / "state")
    config_path = tmp / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    head = _start_and_deploy(config_path, config)
    try:
        # A missing binary is fetched (shared/prometheus.py) or fails the session: no skipping.
        prom = prometheus.start(
            PORTS.prometheus, [f"127.0.0.1:{PORTS.metrics}"], tmp / "prometheus"
        )
    except BaseException:
        cluster.stop_owned_head(head)
        raise
    server = Server(
        f"http://127.0.0.1:{PORTS.http}",
        key,
        keys_file,
        config,
        PORTS,
        config_path,
        head,
        prometheus.url(PORTS.prometheus),
        prom,
    )
    try:
        yield server
    finally:
        prometheus.stop(server.prometheus)
        cluster.stop_owned_head(server.head)


def _start_and_deploy(config_path: Path, config: dict):
    """A running cluster with the test config deployed, trying a fresh head once more if the
    first one is lost while starting (seen once on a machine saturated by another cluster)."""
    for attempt in (1, 2):
        head = cluster.start_owned_head(PORTS)
        try:
            cluster.deploy(config_path, PORTS)
            cluster.wait_running(PORTS, [a["name"] for a in config["applications"]])
            return head
        except (subprocess.CalledProcessError, RuntimeError, TimeoutError):
            cluster.stop_owned_head(head)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "multinode: a 3-node cluster of its own; runs first, before the session's"
    )
    config.addinivalue_line("markers", "redeploys: changes the running cluster; runs last")
    config.addinivalue_line(
        "markers", "restarts: stops and starts the whole stack; runs after everything else"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The multi-node tests go first: their cluster is stopped before the session's one-node
    # cluster starts (both at once would not fit two cores). Tests that redeploy the shared
    # cluster go last, so no other test sees them mid-change; a test that restarts the whole
    # stack goes after them (drivers connected to the first cluster, such as `model_stats`'s,
    # do not outlive it).
    items.sort(
        key=lambda item: (
            item.get_closest_marker("multinode") is None,
            item.get_closest_marker("restarts") is not None,
            item.get_closest_marker("redeploys") is not None,
        )
    )


@pytest.fixture(scope="session")
def model_stats(server: Server, tmp_path_factory: pytest.TempPathFactory):
    """(app, deployment="Model") -> the stats of that deployment's replica (`ModelServer.stats`),
    asked through a Ray driver in a child process (tests/replica_stats.py says why)."""
    client = ReplicaStats(server.ports.address, tmp_path_factory.mktemp("driver") / "stderr.log")
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_png() -> bytes:
    """A 32x32 grey PNG: for requests about everything but inference (send it at imgsz=32)."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 130, 140)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def bus() -> Path:
    return example_image("bus.jpg")


@pytest.fixture(scope="session")
def zidane() -> Path:
    return example_image("zidane.jpg")

"""One real Ray Serve instance for the whole test session, on the real config and weights.

The config is serve_config.yaml with only what a test run must change: ports away from a
developer's `make serve`, a temporary key store, and short windows where tests would otherwise
sleep for minutes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from shared import cluster, keys
from shared.assets import example_image
from shared.registry import PROJECT_ROOT

# Several test sessions (or a `make serve`) can share a machine: each picks its own port block.
PORTS = cluster.ClusterPorts.block(int(os.environ.get("YOLO_TEST_PORT_BASE", "21000")))


@dataclass
class Server:
    base_url: str
    key: str
    keys_file: Path
    config: dict
    ports: cluster.ClusterPorts

    def url(self, path: str) -> str:
        return self.base_url + path

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


def test_config(keys_file: Path) -> dict:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = PORTS.http
    for app in config["applications"]:
        app.setdefault("args", {})["keys_file"] = str(keys_file)
    return config


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("serve")
    keys_file = tmp / "keys.json"
    key = keys.create_key(keys_file, "tests")
    config = test_config(keys_file)
    config_path = tmp / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    head = cluster.start_owned_head(PORTS)
    try:
        cluster.deploy(config_path, PORTS)
        cluster.wait_running(PORTS, [a["name"] for a in config["applications"]])
        yield Server(f"http://127.0.0.1:{PORTS.http}", key, keys_file, config, PORTS)
    finally:
        cluster.stop_owned_head(head)


@pytest.fixture(scope="session")
def bus() -> Path:
    return example_image("bus.jpg")


@pytest.fixture(scope="session")
def zidane() -> Path:
    return example_image("zidane.jpg")

"""Dedicated endpoints: their routes, the official SDK's paths, and batching."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.oracle import assert_matches_oracle


def test_health_reports_model_and_latency(server) -> None:
    response = requests.get(server.url("/endpoints/yolo26n-seg/health"), timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["healthy"] is True
    assert body["status"] == "ready"
    assert body["model"] == "yolo26n-seg"
    assert body["task"] == "segment"
    assert body["latencyMs"] > 0


def test_info_lists_task_classes_and_imgsz(server) -> None:
    response = requests.get(
        server.url("/endpoints/yolo26n/info"), headers=server.headers(), timeout=30
    )
    assert response.status_code == 200
    info = response.json()
    assert info["task"] == "detect"
    assert info["model"] == "yolo26n"
    assert len(info["names"]) == 80 and info["names"][0] == "person"
    assert info["imgsz"] == 640


def test_info_needs_a_key(server) -> None:
    response = requests.get(server.url("/endpoints/yolo26n/info"), timeout=30)
    assert response.status_code == 401
    assert "error" in response.json()


def test_official_sdk_models_predict(server, bus: Path) -> None:
    from ultralytics_platform import Platform

    client = Platform(api_key=server.key, base_url=server.base_url)
    with open(bus, "rb") as f:
        body = client.models.predict(
            "someone", "some-project", "yolo26n", body={"file": f, "conf": 0.25, "imgsz": 640}
        )
    assert body["metadata"]["model"] == "yolo26n.pt"
    assert body["metadata"]["task"] == "detect"
    assert body["metadata"]["classNames"][5] == "bus"
    assert_matches_oracle(body, "yolo26n", bus, conf=0.25, iou=0.7, imgsz=640)


def test_official_sdk_deployments_predict(server, zidane: Path) -> None:
    from ultralytics_platform import Platform

    client = Platform(api_key=server.key, base_url=server.base_url)
    with open(zidane, "rb") as f:
        body = client.deployments.predict("someone", "yolo26n-seg", body={"file": f})
    assert body["metadata"]["model"] == "yolo26n-seg.pt"
    results = body["images"][0]["results"]
    assert results and all("segments" in r for r in results)


def test_the_ul_cli_fills_an_omitted_owner_from_the_account_summary(server, bus: Path) -> None:
    """The official `ul` binary, owner= left out: it asks `GET /api/account/summary` for the
    key's owner before predicting, so the predict only succeeds if the summary works."""
    from ultralytics_platform import Platform

    client = Platform(api_key=server.key, base_url=server.base_url)
    assert client.account.summary()["username"] == "default"  # the test key has no owner
    ul = Path(sys.executable).parent / "ul"
    assert ul.exists(), "the dev extra installs ultralytics-platform and its `ul`"
    env = {**os.environ, "ULTRALYTICS_PLATFORM_URL": server.base_url}
    env["ULTRALYTICS_API_KEY"] = server.key
    body = json.dumps({"file": f"@{bus}", "imgsz": 640})
    done = subprocess.run(
        [str(ul), "cloud", "models", "predict", "project=demo", "model=yolo26n", f"body={body}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    prediction = json.loads(done.stdout)
    assert prediction["metadata"]["model"] == "yolo26n.pt"
    assert prediction["images"][0]["results"]


def test_official_sdk_deployments_read_the_config_endpoints(server) -> None:
    """The SDK's deployments API answers the dedicated endpoints of serve_config.yaml, read from
    Serve itself, and the `ul` CLI lists them for the key's owner."""
    from ultralytics_platform import Platform

    client = Platform(api_key=server.key, base_url=server.base_url)
    listed = {d["deployment"]: d for d in client.deployments.list("default")["deployments"]}
    for name, task in (("yolo26n", "detect"), ("yolo26n-seg", "segment")):
        assert listed[name]["status"] == "ready", listed[name]
        assert listed[name]["model"] == name and listed[name]["task"] == task
    assert "shared" not in listed  # the shared app runs no `Model` deployment
    # The test config pins yolo26n to one replica; yolo26n-seg keeps its preset's bounds.
    assert listed["yolo26n"]["resources"]["minInstances"] == 1
    assert listed["yolo26n-seg"]["resources"]["maxInstances"] == 4
    deployment = client.deployments.retrieve("default", "yolo26n")["deployment"]
    assert deployment["serviceUrl"] == server.url("/endpoints/yolo26n")
    assert deployment["metadata"] == {}
    health = client.deployments.health("default", "yolo26n")
    assert health["healthy"] is True and health["latencyMs"] > 0, health
    ul = Path(sys.executable).parent / "ul"
    env = {**os.environ, "ULTRALYTICS_PLATFORM_URL": server.base_url}
    env["ULTRALYTICS_API_KEY"] = server.key
    done = subprocess.run(
        [str(ul), "cloud", "deployments", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "yolo26n" in {d["deployment"] for d in json.loads(done.stdout)["deployments"]}


def test_sdk_deployments_are_managed_in_the_config(server) -> None:
    """serve_config.yaml's endpoints are no key's to change; the main test key (scope
    `predict`) may create nothing either. tests/test_deployments_lifecycle.py: the rest."""
    for method, path, status in (
        ("PATCH", "/api/deployments/default/yolo26n", 403),
        ("DELETE", "/api/deployments/default/yolo26n", 403),
        ("DELETE", "/api/deployments/default/no-such-endpoint", 404),
        ("POST", "/api/deployments/default", 403),
    ):
        response = requests.request(method, server.url(path), headers=server.headers(), timeout=30)
        assert response.status_code == status, (method, path, response.text)
        assert isinstance(response.json()["error"], str)


def _detections(body: dict) -> list[tuple[int, dict[str, float]]]:
    return [(r["class"], r["box"]) for r in body["images"][0]["results"]]


@pytest.mark.parametrize("resource", ["deployments", "models"])
def test_official_sdk_base64_source_matches_a_file_upload(server, bus: Path, resource: str) -> None:
    """The SDK sends a `source` without a `file` form-urlencoded (httpx without files=)."""
    from ultralytics_platform import Platform

    client = Platform(api_key=server.key, base_url=server.base_url)

    def predict(body: dict[str, Any]) -> dict:
        if resource == "deployments":
            return client.deployments.predict("acme", "yolo26n", body=body)
        return client.models.predict("acme", "some-project", "yolo26n", body=body)

    from_source = predict({"source": base64.b64encode(bus.read_bytes()).decode()})
    with open(bus, "rb") as f:
        from_file = predict({"file": f})
    assert _detections(from_source), from_source
    assert _detections(from_source) == _detections(from_file)


def test_sdk_unknown_deployment_is_404(server, zidane: Path) -> None:
    response = requests.post(
        server.url("/api/deployments/someone/no-such-endpoint/predict"),
        headers=server.headers(),
        files={"file": zidane.read_bytes()},
        timeout=30,
    )
    assert response.status_code == 404
    assert response.json() == {"error": "Deployment not found"}


def test_concurrent_requests_form_batches(server, model_stats, bus: Path, zidane: Path) -> None:
    before = model_stats("yolo26n")["batch_sizes"]
    images = [bus, zidane] * 4  # two sizes in flight together
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda p: server.predict("", p, prefix="/endpoints/yolo26n"), images)
        )
    for path, response in zip(images, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_matches_oracle(response.json(), "yolo26n", path, conf=0.25, iou=0.7, imgsz=640)
    after = model_stats("yolo26n")["batch_sizes"]
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * n for size, n in grown.items()) == 8
    assert max(size for size, n in grown.items() if n > 0) > 1, grown


def test_shared_pool_loads_on_demand_and_evicts(server, model_stats, bus: Path) -> None:
    """The pool holds at most `max_models_per_replica` (3) models, least recently used out."""
    before = model_stats("shared", "ModelPool")["loads"]
    for model in ("yolo26n", "yolo11n", "yolo26n-seg", "yolo11n-pose", "yolo26n"):
        response = server.predict(model, bus, imgsz=320)
        assert response.status_code == 200, response.text
    missing = server.predict("not-in-registry", bus)
    assert missing.status_code == 404
    loads = model_stats("shared", "ModelPool")["loads"][len(before) :]
    assert "not-in-registry" not in loads
    # After the first three the pool holds exactly those; the fourth evicts the least recently
    # used (yolo26n), which the fifth request then loads again.
    assert loads[-2:] == ["yolo11n-pose", "yolo26n"], loads

"""The SDK's deployments API on the live cluster: a dedicated endpoint created, watched, used,
replaced under load, resized, stopped, started and deleted with the official SDK and its `ul`
CLI, every answer held to the SDK's TypedDicts; owners kept apart; records that outlive an
operator's `serve deploy`, the control plane's own restart and a restart of the whole stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ultralytics_platform import APIError, Platform
from ultralytics_platform import types as sdk

from shared import cluster
from tests.live_deployments import OWNER, READY_S, new_key, wait_for
from tests.oracle import assert_matches_oracle
from tests.processes import actor_pids
from tests.sdk_types import assert_sdk_type
from tests.traffic import Traffic


@pytest.fixture(scope="module")
def deployer(server) -> str:
    return new_key(server, "deployer", owner=OWNER, scope="deploy")


@pytest.fixture(scope="module")
def rival(server) -> str:
    return new_key(server, "rival", owner="rival", scope="deploy")


@pytest.fixture(scope="module")
def sdk_client(server, deployer: str) -> Iterator[Platform]:
    client = Platform(api_key=deployer, base_url=server.base_url, timeout=120)
    yield client
    client.close()


def ul(server, key: str, *args: str) -> dict[str, Any]:
    """The official CLI against this server, the owner left for it to fill in."""
    env = {
        **os.environ,
        "ULTRALYTICS_PLATFORM_URL": server.base_url,
        "ULTRALYTICS_API_KEY": key,
    }
    done = subprocess.run(
        [str(cluster.BIN / "ul"), "cloud", "deployments", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


def predict(server, slug: str, image: Path, key: str) -> requests.Response:
    return server.predict("", image, key=key, prefix=f"/endpoints/{slug}")


def eventually(check: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def update(client: Platform, slug: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.deployments.update(OWNER, slug, body=body)
    assert_sdk_type(answer, sdk.DeploymentsUpdateResponse)
    return answer


def test_a_deployments_whole_life_through_the_sdk_and_ul(
    server, deployer: str, sdk_client: Platform, bus: Path
) -> None:
    created = ul(
        server,
        deployer,
        "create",
        "project=demo",
        "model=yolo26n",
        "deployment=live-demo",
        "name=Live demo",
        "region=europe-west4",
    )
    assert_sdk_type(created, sdk.DeploymentsCreateResponse)
    assert created["status"] == "creating" and created["region"] == "europe-west4"
    shown = wait_for(sdk_client, "live-demo", "ready")
    assert shown["owner"] == OWNER and shown["serviceUrl"] == server.url("/endpoints/live-demo")
    assert shown["resources"]["cpu"] == 1 and shown["resources"]["memoryGi"] == 2

    r = predict(server, "live-demo", bus, deployer)
    assert r.status_code == 200, r.text
    assert_matches_oracle(r.json(), "yolo26n", bus, conf=0.25, iou=0.7, imgsz=640)
    through_sdk = sdk_client.deployments.predict(
        OWNER, "live-demo", body={"file": bus.read_bytes()}
    )
    assert through_sdk["images"][0]["results"] == r.json()["images"][0]["results"]
    health = sdk_client.deployments.health(OWNER, "live-demo")
    assert_sdk_type(health, sdk.DeploymentsHealthResponse)
    assert health["healthy"] is True

    listed = ul(server, deployer, "list", "status=ready")
    assert_sdk_type(listed, sdk.DeploymentsListResponse)
    assert "live-demo" in [d["deployment"] for d in listed["deployments"]]

    # Replaced while two clients send: nobody sees a failure, and the answers switch model.
    with Traffic(server, "/endpoints/live-demo/predict", bus.read_bytes(), 2, key=deployer) as load:
        eventually(lambda: len(load.outcomes) >= 4, what="no traffic")
        answer = update(sdk_client, "live-demo", {"action": "replace", "model": "yolo11n"})
        assert answer["status"] == "deploying"
        eventually(
            lambda: bool(load.outcomes) and load.outcomes[-1].model == "yolo11n.pt",
            timeout_s=READY_S,
            what="the new model never answered",
        )
        time.sleep(2)
    failures = [o for o in load.outcomes if o.status != 200]
    assert not failures, failures[:3]
    assert load.outcomes[0].model == "yolo26n.pt"
    assert wait_for(sdk_client, "live-demo", "ready")["model"] == "yolo11n"

    answer = update(sdk_client, "live-demo", {"action": "resize", "cpu": 2, "memoryGi": 4})
    assert answer["status"] == "deploying"
    resized = wait_for(sdk_client, "live-demo", "ready")
    assert resized["resources"]["cpu"] == 2 and resized["resources"]["memoryGi"] == 4
    actor = _model_actor_options(server, "live-demo")
    assert actor["num_cpus"] == 2 and actor["memory"] == 4 * 2**30

    update(sdk_client, "live-demo", {"metadata": {"team": "vision"}})
    assert wait_for(sdk_client, "live-demo", "ready")["metadata"] == {"team": "vision"}

    assert update(sdk_client, "live-demo", {"action": "stop"})["status"] in ("stopping", "stopped")
    wait_for(sdk_client, "live-demo", "stopped", timeout_s=60)
    eventually(
        lambda: predict(server, "live-demo", bus, deployer).status_code == 503, what="not 503"
    )
    stopped = predict(server, "live-demo", bus, deployer)
    assert "is stopped" in stopped.json()["error"]

    assert update(sdk_client, "live-demo", {"action": "start"})["status"] == "deploying"
    wait_for(sdk_client, "live-demo", "ready")
    eventually(
        lambda: predict(server, "live-demo", bus, deployer).status_code == 200, what="not back"
    )

    assert ul(server, deployer, "delete", "deployment=live-demo") == {"success": True}
    with pytest.raises(APIError) as missing:
        sdk_client.deployments.retrieve(OWNER, "live-demo")
    assert missing.value.status_code == 404
    assert predict(server, "live-demo", bus, deployer).status_code == 404


def test_another_owner_cannot_reach_a_deployment(
    server, deployer: str, rival: str, sdk_client: Platform, tiny_png: bytes
) -> None:
    sdk_client.deployments.create(
        OWNER, project="p", model="yolo26n", deployment="private-demo", name="x", region="us-east1"
    )
    try:
        wait_for(sdk_client, "private-demo", "ready")
        own = server.predict("", tiny_png, key=deployer, prefix="/endpoints/private-demo", imgsz=32)
        assert own.status_code == 200, own.text
        theirs = Platform(api_key=rival, base_url=server.base_url, max_retries=0)
        for call in (
            lambda: theirs.deployments.retrieve("rival", "private-demo"),
            lambda: theirs.deployments.health("rival", "private-demo"),
            lambda: theirs.deployments.update("rival", "private-demo", body={"action": "stop"}),
            lambda: theirs.deployments.delete("rival", "private-demo"),
            lambda: theirs.deployments.predict("rival", "private-demo", body={"file": tiny_png}),
        ):
            with pytest.raises(APIError) as refused:
                call()
            assert refused.value.status_code == 404
        listed = theirs.deployments.list("rival")
        assert "private-demo" not in [d["deployment"] for d in listed["deployments"]]
        # The endpoint's own route too: its application checks the owner itself.
        r = server.predict("", tiny_png, key=rival, prefix="/endpoints/private-demo", imgsz=32)
        assert r.status_code == 404 and r.json() == {"error": "Model not found"}
        # A key of the owner without scope `deploy` reads and predicts but changes nothing.
        reader = new_key(server, "reader", owner=OWNER)
        r = requests.patch(
            server.url(f"/api/deployments/{OWNER}/private-demo"),
            headers=server.headers(reader),
            json={"action": "stop"},
        )
        assert r.status_code == 403 and "scope 'deploy'" in r.json()["error"]
    finally:
        sdk_client.deployments.delete(OWNER, "private-demo")


def _node_memory_gib(server) -> float:
    with requests.get(f"{server.ports.dashboard_url}/nodes?view=summary", timeout=30) as r:
        nodes = r.json()["data"]["summary"]
    return max(n["raylet"]["resourcesTotal"].get("memory", 0) for n in nodes) / 2**30


def test_a_deployment_no_node_can_place_fails_with_serves_reason(
    server, sdk_client: Platform
) -> None:
    if _node_memory_gib(server) >= 32:
        pytest.skip("a node has 32 GiB for Ray: the largest size fits here")
    sdk_client.deployments.create(
        OWNER,
        project="p",
        model="yolo26n",
        deployment="too-big",
        name="x",
        region="us-east1",
        memory_gi=32,
    )
    try:
        failed = wait_for(sdk_client, "too-big", "failed", timeout_s=90)
        assert "Resources required for each replica" in failed["statusMessage"]
        assert "memory" in failed["statusMessage"]
        eventually(lambda: "too-big" not in cluster.app_statuses(server.ports), what="kept")
    finally:
        sdk_client.deployments.delete(OWNER, "too-big")


def _model_actor_options(server, app: str) -> dict[str, Any]:
    details = cluster.serve_applications(server.ports)[app]
    return details["deployments"]["Model"]["deployment_config"]["ray_actor_options"]


@pytest.mark.restarts
def test_records_outlive_serve_deploy_and_restarts(
    server, deployer: str, sdk_client: Platform, tiny_png: bytes
) -> None:
    sdk_client.deployments.create(
        OWNER, project="p", model="yolo26n", deployment="lasting", name="x", region="us-east1"
    )
    sdk_client.deployments.create(
        OWNER, project="p", model="yolo26n", deployment="resting", name="x", region="us-east1"
    )
    try:
        wait_for(sdk_client, "lasting", "ready")
        wait_for(sdk_client, "resting", "ready")
        update(sdk_client, "resting", {"action": "stop"})
        wait_for(sdk_client, "resting", "stopped", timeout_s=60)

        def serves() -> bool:
            r = server.predict("", tiny_png, key=deployer, prefix="/endpoints/lasting", imgsz=32)
            return r.status_code == 200

        # An operator's `serve deploy serve_config.yaml` leaves API-created endpoints running.
        cluster.deploy(server.config_path, server.ports)
        time.sleep(5)
        cluster.wait_running(server.ports, [a["name"] for a in server.config["applications"]])
        assert serves() and "lasting" in cluster.app_statuses(server.ports)

        # The control plane killed: Serve starts another, which loses nothing and redeploys
        # nothing that runs as recorded.
        (pid,) = actor_pids(server, "ServeReplica:shared:ControlPlane")
        before = cluster.serve_applications(server.ports)["lasting"]["last_deployed_time_s"]
        os.kill(pid, signal.SIGKILL)
        eventually(
            lambda: set(actor_pids(server, "ServeReplica:shared:ControlPlane")) - {pid} != set(),
            timeout_s=120,
            what="no new control plane",
        )
        assert wait_for(sdk_client, "resting", "stopped", timeout_s=60)
        time.sleep(5)  # a few reconcile passes
        after = cluster.serve_applications(server.ports)["lasting"]["last_deployed_time_s"]
        assert after == before and serves()

        # The whole stack stopped and started again: each record as it was left.
        server.restart()
        assert wait_for(sdk_client, "lasting", "ready")["metadata"] == {}
        eventually(serves, timeout_s=READY_S, what="not serving after the restart")
        assert wait_for(sdk_client, "resting", "stopped", timeout_s=30)
        assert "resting" not in cluster.app_statuses(server.ports)
    finally:
        for slug in ("lasting", "resting"):
            sdk_client.deployments.delete(OWNER, slug)

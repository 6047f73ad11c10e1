"""Creating and changing deployments through the SDK's API, in-process: the real ingress routes
and control plane (real SQLite records), over a stand-in Serve whose applications its deploys
and deletes change (tests/fakes.py `FakeServeApps`). The live cluster runs the same flows with
the real SDK and `ul` (tests/test_deployments_lifecycle.py); these cover every rule fast.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ultralytics_platform import types as sdk

from deployments.control_plane import Change
from shared import keys
from tests.control_app import App, auth
from tests.sdk_types import assert_sdk_type

LIST = "/api/deployments/acme"
ONE = f"{LIST}/demo"
BODY = {
    "project": "demo-project",
    "model": "yolo26n",
    "deployment": "demo",
    "name": "Demo endpoint",
    "region": "europe-west4",
}
UNSCHEDULABLE = (
    "Deployment 'Model' in application 'demo' has 1 replicas that have taken more than 10s to be "
    "scheduled. This may be due to waiting for the cluster to auto-scale or for a runtime "
    "environment to be installed. Resources required for each replica: {'CPU': 1.0, 'memory': "
    "34359738368.0}, total resources available: {'CPU': 15.0}. Use `ray status` for more details."
)


@pytest.fixture(autouse=True)
def checked_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_VALIDATE_RESPONSES", "1")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


# Every key before the app reads the store (a KeyRing looks at it again once a second).
KEYS = {
    "deployer": {"owner": "acme", "scope": "deploy"},
    "reader": {"owner": "acme"},
    "narrow": {"owner": "acme", "scope": "deploy", "models": ["yolo11n"]},
    "rival": {"owner": "rival", "scope": "deploy"},
}


@pytest.fixture
def key(store: Path) -> dict[str, str]:
    return {name: keys.create_key(store, name, **rules) for name, rules in KEYS.items()}


@pytest.fixture
def deployer(key: dict[str, str]) -> str:
    return key["deployer"]


@pytest.fixture
def app(store: Path, deployer: str) -> App:
    return App(store)


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def create(app: App, key: str, **changes: Any):
    return app.client.post(LIST, headers=auth(key), json={**BODY, **changes})


def retrieve(app: App, key: str, path: str = ONE) -> dict[str, Any]:
    r = app.client.get(path, headers=auth(key))
    assert r.status_code == 200, r.text
    assert_sdk_type(r.json(), sdk.DeploymentsRetrieveResponse)
    return r.json()["deployment"]


def patch(app: App, key: str, body: dict[str, Any], path: str = ONE):
    r = app.client.patch(path, headers=auth(key), json=body)
    if r.status_code == 200:
        assert_sdk_type(r.json(), sdk.DeploymentsUpdateResponse)
    return r


def ready(app: App, slug: str = "demo") -> None:
    """Serve brings the application up, and the control plane's next pass sees it."""
    app.serve.run(slug)
    app.reconcile()


# -- create -------------------------------------------------------------------------------------
def test_create_answers_creating_then_the_deployment_comes_up(app: App, deployer: str) -> None:
    r = create(app, deployer, cpu=2, memoryGi=4)
    assert r.status_code == 201, r.text
    assert_sdk_type(r.json(), sdk.DeploymentsCreateResponse)
    assert r.json() == {
        "id": "demo",
        "deployment": "demo",
        "status": "creating",
        "message": "Deployment 'demo' is being created",
        "region": "europe-west4",
    }
    ((name, args),) = app.serve.deployed
    assert name == "demo"
    assert (args.model, args.owner, args.num_cpus, args.memory_gi) == ("yolo26n", "acme", 2, 4)
    assert args.limiter_app == "shared" and args.autoscaling == "latency-first"
    assert Path(args.keys_file).is_absolute()  # the endpoint's replicas read the same store

    deploying = retrieve(app, deployer)
    assert deploying["status"] == "deploying" and deploying["statusMessage"]
    ready(app)
    shown = retrieve(app, deployer)
    assert shown["status"] == "ready" and "statusMessage" not in shown
    assert shown["owner"] == "acme" and shown["project"] == "demo-project"
    assert shown["name"] == "Demo endpoint" and shown["region"] == "europe-west4"
    assert shown["serviceUrl"] == "http://testserver/endpoints/demo"
    assert shown["resources"] == {"cpu": 2, "memoryGi": 4, "minInstances": 1, "maxInstances": 4}
    assert shown["metadata"] == {} and shown["deployedAt"]
    listed = app.client.get(LIST, headers=auth(deployer)).json()
    assert_sdk_type(listed, sdk.DeploymentsListResponse)
    assert [d["deployment"] for d in listed["deployments"]] == ["demo", "yolo26n", "yolo26n-seg"]


def test_defaults_are_one_cpu_and_2_gib(app: App, deployer: str) -> None:
    assert create(app, deployer).status_code == 201
    assert retrieve(app, deployer)["resources"]["cpu"] == 1
    assert retrieve(app, deployer)["resources"]["memoryGi"] == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"deployment": "Demo"}, "Invalid 'deployment'"),
        ({"deployment": "-demo"}, "Invalid 'deployment'"),
        ({"deployment": "a" * 64}, "Invalid 'deployment'"),
        ({"deployment": "../x"}, "Invalid 'deployment'"),
        ({"cpu": 3}, "Invalid 'cpu'"),
        ({"cpu": "2"}, "Invalid 'cpu'"),
        ({"memoryGi": 5}, "Invalid 'memoryGi'"),
        ({"name": ""}, "Invalid 'name'"),
        ({"name": "tab\there"}, "Invalid 'name'"),
        ({"region": "Mars"}, "Invalid 'region'"),
        ({"model": "../../etc/passwd"}, "Invalid 'model'"),
        ({"extra": 1}, "Unknown field 'extra'"),
    ],
)
def test_a_bad_create_is_a_400_naming_the_field(app: App, deployer: str, changes, message):
    assert error_of(create(app, deployer, **changes), 400).startswith(message)
    assert app.serve.deployed == []


@pytest.mark.parametrize("field", ["project", "model", "deployment", "name", "region"])
def test_a_missing_field_is_a_400(app: App, deployer: str, field: str) -> None:
    body = {k: v for k, v in BODY.items() if k != field}
    r = app.client.post(LIST, headers=auth(deployer), json=body)
    assert error_of(r, 400) == f"Missing field '{field}'"


@pytest.mark.parametrize("raw", [b"{", b"[1]", b'"x"', b"\xff", b"[" * 100_000])
def test_a_body_that_is_no_json_object_is_a_400(app: App, deployer: str, raw: bytes) -> None:
    r = app.client.post(
        LIST, headers={**auth(deployer), "Content-Type": "application/json"}, content=raw
    )
    assert r.status_code in (400, 413), r.text
    assert r.json()["error"]


def test_a_huge_body_is_a_413_and_no_json_a_415(app: App, deployer: str) -> None:
    big = {**BODY, "name": "x" * 70_000}
    assert error_of(app.client.post(LIST, headers=auth(deployer), json=big), 413)
    form = app.client.post(LIST, headers=auth(deployer), data=BODY)
    assert error_of(form, 415) == "Send the body as application/json"


def test_an_unknown_or_forbidden_model_is_a_404(app: App, key: dict[str, str]) -> None:
    assert error_of(create(app, key["deployer"], model="nope"), 404) == "Model not found: nope"
    assert error_of(create(app, key["narrow"]), 404) == "Model not found: yolo26n"


@pytest.mark.parametrize("slug", ["yolo26n", "shared"])
def test_a_slug_serve_already_runs_is_taken(app: App, deployer: str, slug: str) -> None:
    # serve_config.yaml's applications included: taking one's name would take its route over.
    assert error_of(create(app, deployer, deployment=slug), 409).endswith("already exists")


def test_a_slug_is_everyones_once_taken(app: App, key: dict[str, str]) -> None:
    assert create(app, key["deployer"]).status_code == 201
    assert error_of(create(app, key["rival"]), 409) == "Deployment 'demo' already exists"


def test_changes_need_scope_deploy(app: App, key: dict[str, str], deployer: str) -> None:
    reader = key["reader"]
    assert "scope 'deploy'" in error_of(create(app, reader), 403)
    assert create(app, deployer).status_code == 201
    assert "scope 'deploy'" in error_of(patch(app, reader, {"action": "stop"}), 403)
    assert "scope 'deploy'" in error_of(app.client.delete(ONE, headers=auth(reader)), 403)
    assert retrieve(app, reader)["status"] == "deploying"  # reading needs no more


# -- owners --------------------------------------------------------------------------------------
def test_another_owners_key_gets_404_on_every_route(app: App, key: dict[str, str]) -> None:
    deployer, rival = key["deployer"], key["rival"]
    assert create(app, deployer).status_code == 201
    ready(app)
    missing = app.client.get(f"{LIST}/nope", headers=auth(rival)).json()
    for method, path in [
        ("GET", ONE),
        ("PATCH", ONE),
        ("DELETE", ONE),
        ("GET", f"{ONE}/health"),
        ("GET", f"{ONE}/logs"),
        ("POST", f"{ONE}/predict"),
    ]:
        r = app.client.request(method, path, headers=auth(rival), json={"action": "stop"})
        assert r.status_code == 404 and r.json() == missing, (method, path, r.text)
    listed = app.client.get("/api/deployments/rival", headers=auth(rival)).json()
    assert "demo" not in [d["deployment"] for d in listed["deployments"]]
    # Its route under /endpoints/, once no application answers there: the same 404.
    assert patch(app, deployer, {"action": "stop"}).status_code == 200
    r = app.client.post("/endpoints/demo/predict", headers=auth(rival))
    assert error_of(r, 404) == "Model not found"
    assert retrieve(app, deployer)["status"] == "stopped"


def test_the_dedicated_endpoint_itself_refuses_other_owners(
    store: Path, key: dict[str, str], deployer: str
) -> None:
    """The endpoint's own app (its ingress built from the record's args) checks the owner."""
    from starlette.testclient import TestClient

    from deployments.ingress import IngressApp
    from tests.fakes import FakeModel

    app = App(store)
    assert create(app, deployer).status_code == 201
    ((_, args),) = app.serve.deployed
    args = args.model_copy(update={"limiter_app": None})  # no Serve here to reach one in
    endpoint = TestClient(IngressApp(FakeModel(), args).__serve_build_asgi_app__())  # type: ignore[arg-type]
    rival = key["rival"]
    image = {"file": ("a.png", _png())}
    assert endpoint.post("/predict", headers=auth(rival), files=image).status_code == 404
    assert endpoint.get("/info", headers=auth(rival)).status_code == 404
    assert endpoint.post("/predict", headers=auth(deployer), files=image).status_code == 200
    # Its public routes name no model: its health takes its owner's key, its page and document
    # say nothing of the model.
    assert endpoint.get("/health").status_code == 401
    assert endpoint.get("/health", headers=auth(rival)).status_code == 404
    assert endpoint.get("/health", headers=auth(deployer)).json()["healthy"] is True
    assert 'data-model=""' in endpoint.get("/").text
    assert "yolo26n" not in endpoint.get("/openapi.json").json()["info"]["title"]


# -- stop, start, replace, resize, rename, metadata ------------------------------------------
def test_stop_keeps_the_record_and_predictions_answer_503(app: App, deployer: str) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    r = patch(app, deployer, {"action": "stop"})
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    assert "demo" in app.serve.deleted and "demo" not in app.serve.applications
    for path in (f"{ONE}/predict", "/endpoints/demo/predict"):
        r = app.client.post(path, headers=auth(deployer), files={"file": ("a.png", _png())})
        assert "is stopped" in error_of(r, 503), path
    health = app.client.get(f"{ONE}/health", headers=auth(deployer)).json()
    assert health["healthy"] is False and "is stopped" in health["error"]
    app.reconcile()
    assert len(app.serve.deployed) == 1  # a stopped one stays stopped

    r = patch(app, deployer, {"action": "start"})
    assert r.status_code == 200 and r.json()["status"] == "deploying"
    assert len(app.serve.deployed) == 2
    ready(app)
    assert retrieve(app, deployer)["status"] == "ready"


def test_a_deployment_on_its_way_up_answers_503_with_retry_after(app: App, deployer: str):
    assert create(app, deployer).status_code == 201
    r = app.client.post(f"{ONE}/predict", headers=auth(deployer), files={"file": ("a", _png())})
    assert "is deploying" in error_of(r, 503) and r.headers["Retry-After"] == "5"


def test_replace_rolls_out_another_model(app: App, deployer: str) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    r = patch(app, deployer, {"action": "replace", "model": "yolo11n"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "deploying" and "yolo11n" in r.json()["message"]
    assert [args.model for _, args in app.serve.deployed] == ["yolo26n", "yolo11n"]
    assert app.serve.deleted == []  # the same application, updated in place by Serve
    assert retrieve(app, deployer)["model"] == "yolo11n"
    assert error_of(patch(app, deployer, {"action": "replace", "model": "nope"}), 404)


def test_a_rollout_surges_only_where_the_new_replicas_fit_beside_the_old(
    app: App, deployer: str
) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    assert patch(app, deployer, {"action": "replace", "model": "yolo11n"}).status_code == 200
    ready(app)
    app.serve.free = [{"CPU": 0.5, "memory": 64.0 * 2**30}]  # the old replica fills the node
    assert patch(app, deployer, {"action": "replace", "model": "yolo26n"}).status_code == 200
    # Created with nothing to keep serving; then beside the old replica; then in its place.
    surges = [args.rollout_surge_percent for _, args in app.serve.deployed]
    assert surges == [0, 100, 0]


def test_resize_changes_the_replicas_resources(app: App, deployer: str) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    r = patch(app, deployer, {"action": "resize", "cpu": 4, "memoryGi": 8})
    assert r.status_code == 200 and r.json()["status"] == "deploying"
    _, args = app.serve.deployed[-1]
    assert (args.num_cpus, args.memory_gi) == (4, 8)
    ready(app)
    assert retrieve(app, deployer)["resources"]["memoryGi"] == 8


def test_metadata_and_name_change_no_replica(app: App, deployer: str) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    meta = {"team": "vision", "tags": ["a", "é"], "nested": {"n": 1}}
    assert patch(app, deployer, {"metadata": meta}).json()["status"] == "ready"
    assert patch(app, deployer, {"name": "Renamed"}).status_code == 200
    shown = retrieve(app, deployer)
    assert shown["metadata"] == meta and shown["name"] == "Renamed"
    assert len(app.serve.deployed) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "camera", "url": "rtsp://x"}, "The camera action is not supported"),
        ({"action": "replace"}, "Missing field 'model'"),
        ({"action": "resize"}, "Missing field 'cpu' or 'memoryGi'"),
        ({"action": "resize", "cpu": 3}, "Invalid 'cpu'"),
        ({"action": "explode"}, "Invalid 'action'"),
        ({"action": "stop", "model": "yolo11n"}, "Unknown field 'model' for action 'stop'"),
        ({}, "The body must be {metadata}, {name} or {action"),
        ({"metadata": "x"}, "Invalid 'metadata'"),
        ({"metadata": {"x": "y" * 20_000}}, "Invalid 'metadata': over 16 KB"),
        ({"name": ""}, "Invalid 'name'"),
    ],
)
def test_a_bad_patch_is_a_400(app: App, deployer: str, body, message) -> None:
    assert create(app, deployer).status_code == 201
    assert error_of(patch(app, deployer, body), 400).startswith(message)


# -- delete --------------------------------------------------------------------------------------
def test_delete_removes_the_application_and_the_record(app: App, deployer: str) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    r = app.client.delete(ONE, headers=auth(deployer))
    assert r.status_code == 200 and r.json() == {"success": True}
    assert_sdk_type(r.json(), sdk.DeploymentsDeleteResponse)
    assert "demo" not in app.serve.applications and app.control.store.get("demo") is None
    assert error_of(app.client.get(ONE, headers=auth(deployer)), 404) == "Deployment not found"
    r = app.client.post("/endpoints/demo/predict", headers=auth(deployer))
    assert error_of(r, 404) == "Model not found"
    assert create(app, deployer).status_code == 201  # the slug is free again


def test_a_delete_right_after_create_deletes_the_application_serve_just_listed(
    app: App, deployer: str
) -> None:
    """Serve lists a new application before its deployments: deleting it then must still reach
    Serve, not forget the record and leave an application nobody owns."""
    app.serve.bare = True
    assert create(app, deployer).status_code == 201
    assert "demo" in app.serve.applications
    app.reconcile()  # nothing deployed twice while Serve has it by name only
    assert len(app.serve.deployed) == 1
    assert app.client.delete(ONE, headers=auth(deployer)).status_code == 200
    assert app.serve.deleted == ["demo"] and "demo" not in app.serve.applications
    assert app.control.store.get("demo") is None
    listed = app.client.get(LIST, headers=auth(deployer)).json()["deployments"]
    assert "demo" not in [d["deployment"] for d in listed]


def test_an_application_nobody_declared_is_nobodys_to_see(app: App, deployer: str) -> None:
    from tests.fakes import serve_app

    app.serve.applications["stray"] = serve_app("stray", None)  # deployed from code by hand
    app.reconcile()
    listed = app.client.get(LIST, headers=auth(deployer)).json()["deployments"]
    assert "stray" not in [d["deployment"] for d in listed]
    assert app.client.get(f"{LIST}/stray", headers=auth(deployer)).status_code == 404


def test_a_delete_serve_is_slow_to_finish_is_finished_by_a_later_pass(
    app: App, deployer: str
) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    app.serve.linger = True
    import deployments.control_plane as control_plane

    wait, control_plane.DELETE_WAIT_S = control_plane.DELETE_WAIT_S, 0.3
    try:
        assert app.client.delete(ONE, headers=auth(deployer)).status_code == 200
    finally:
        control_plane.DELETE_WAIT_S = wait
    assert error_of(app.client.get(ONE, headers=auth(deployer)), 404)  # already gone to callers
    assert app.control.store.get("demo").desired == "deleted"  # a tombstone until Serve is done
    app.serve.gone("demo")
    app.reconcile()
    assert app.control.store.get("demo") is None


# -- restarts and failures -----------------------------------------------------------------------
def test_a_restart_redeploys_each_record_as_it_was_left(
    store: Path, deployer: str, tmp_path: Path
) -> None:
    database = tmp_path / "records.sqlite"
    first = App(store, database=database)
    for slug in ("one", "two"):
        assert create(first, deployer, deployment=slug).status_code == 201
        ready(first, slug)
    assert patch(first, deployer, {"action": "stop"}, f"{LIST}/two").status_code == 200
    # Serve as after `make serve` was stopped and started: only serve_config.yaml's apps.
    again = App(store, database=database)
    again.reconcile()
    assert [name for name, _ in again.serve.deployed] == ["one"]
    assert retrieve(again, deployer, f"{LIST}/two")["status"] == "stopped"
    # A control plane restarted while Serve still runs its applications redeploys nothing.
    running = App(store, {**again.serve.applications}, database=database)
    running.serve.run("one")
    running.reconcile()
    assert running.serve.deployed == []


def test_an_unplaceable_deployment_fails_with_serves_reason(app: App, deployer: str) -> None:
    assert create(app, deployer, memoryGi=32).status_code == 201
    app.serve.run("demo", status="DEPLOYING", running=0, deployment_message=UNSCHEDULABLE)
    app.reconcile()
    shown = retrieve(app, deployer)
    assert shown["status"] == "failed"
    assert "Resources required for each replica" in shown["statusMessage"]
    assert "demo" in app.serve.deleted  # not left pending forever
    app.reconcile()
    assert retrieve(app, deployer)["status"] == "failed" and len(app.serve.deployed) == 1
    r = patch(app, deployer, {"action": "resize", "memoryGi": 2})
    assert r.status_code == 200 and r.json()["status"] == "deploying"
    assert app.serve.deployed[-1][1].memory_gi == 2


def test_a_deploy_serve_refuses_is_a_failed_deployment(app: App, deployer: str) -> None:
    app.serve.refuse = RuntimeError("Serve says no\nTraceback: /secret/path")
    assert create(app, deployer).status_code == 201
    shown = retrieve(app, deployer)
    assert shown["status"] == "failed" and shown["statusMessage"] == "Deploy failed: Serve says no"
    app.serve.refuse = None
    assert patch(app, deployer, {"action": "start"}).json()["status"] == "deploying"


def test_concurrent_changes_to_one_deployment_are_serialised(app: App, deployer: str) -> None:
    assert create(app, deployer).status_code == 201
    ready(app)
    inside, most = 0, 0
    guard = threading.Lock()
    deploy = app.serve.deploy

    def slow_deploy(name: str, args: Any) -> None:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)
        deploy(name, args)
        with guard:
            inside -= 1

    app.serve.deploy = slow_deploy  # type: ignore[method-assign]

    async def both() -> list[Any]:
        return await asyncio.gather(
            app.control.update("acme", "demo", Change(action="resize", cpu=2)),
            app.control.update("acme", "demo", Change(action="replace", model="yolo11n")),
        )

    asyncio.run(both())
    assert most == 1
    record = app.control.store.get("demo")
    assert (record.cpu, record.model, record.generation) == (2, "yolo11n", 3)
    assert record.deployed_generation == 3  # the last deploy carries both changes
    assert (app.serve.deployed[-1][1].num_cpus, app.serve.deployed[-1][1].model) == (2, "yolo11n")


# -- the official SDK, in-process ---------------------------------------------------------------
def test_the_official_sdk_manages_a_deployment(app: App, deployer: str) -> None:
    from ultralytics_platform import APIError, Platform

    client = Platform(
        api_key=deployer, base_url="http://testserver", http_client=app.client, max_retries=0
    )
    created = client.deployments.create(
        "acme",
        project="p",
        model="yolo26n",
        deployment="demo",
        name="Demo",
        region="us-central1",
        cpu=1,
        memory_gi=2,
    )
    assert created["status"] == "creating"
    ready(app)
    assert client.deployments.retrieve("acme", "demo")["deployment"]["status"] == "ready"
    stopped = client.deployments.update("acme", "demo", body={"action": "stop"})
    assert stopped["status"] == "stopped"
    assert client.deployments.list("acme", status="stopped")["total"] == 1
    assert client.deployments.delete("acme", "demo") == {"success": True}
    with pytest.raises(APIError) as failed:
        client.deployments.retrieve("acme", "demo")
    assert failed.value.status_code == 404


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 130, 140)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_control_plane_that_does_not_answer_is_a_503_not_a_hang(
    app: App, deployer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deployments.deployment_routes as routes
    from tests.fakes import LocalHandle

    class Wedged:
        async def views(self) -> None:
            await asyncio.sleep(3600)

        async def view(self, slug: str) -> None:
            await asyncio.sleep(3600)

        async def create(self, request: Any) -> None:
            await asyncio.sleep(3600)

    monkeypatch.setattr(routes, "READ_TIMEOUT_S", 0.2)
    monkeypatch.setattr(routes, "CHANGE_TIMEOUT_S", 0.2)
    app.ingress.control = LocalHandle(Wedged())  # type: ignore[assignment]
    for method, path, body in [
        ("GET", LIST, None),
        ("GET", ONE, None),
        ("POST", LIST, BODY),
        ("POST", "/endpoints/demo/predict", None),
    ]:
        r = app.client.request(method, path, headers=auth(deployer), json=body)
        assert error_of(r, 503) == routes.CONTROL_DOWN, path
        assert r.headers["Retry-After"] == "5"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"metadata": {"x": NaN}}',
        b'{"metadata": {"x": 1e999}}',
        b'{"name": 1' + b"9" * 5000 + b"}",
    ],
)
def test_numbers_json_cannot_hold_are_a_400_not_a_broken_record(
    app: App, deployer: str, raw: bytes
) -> None:
    assert create(app, deployer).status_code == 201
    headers = {**auth(deployer), "Content-Type": "application/json"}
    r = app.client.patch(ONE, headers=headers, content=raw)
    assert error_of(r, 400) == "Malformed JSON body"
    assert retrieve(app, deployer)["metadata"] == {}  # still readable

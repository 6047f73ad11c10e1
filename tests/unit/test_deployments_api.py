"""The official SDK's deployments API in-process: reading serve_config.yaml's endpoints.

The ingress under Starlette's TestClient (as in test_ingress_routes.py) over the real control
plane (its SQLite records in a temporary directory) reading Serve details built by Ray's own
schema models (tests/fakes.py `serve_app`, `FakeServeApps`), and a stand-in model handle.
Every body is held to the route's declared model (the response check) and to the SDK's own
TypedDicts, the contract its users code against. Creating and changing deployments:
test_deployments_lifecycle.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ultralytics_platform import types as sdk

from shared import keys
from shared.serve_apps import Endpoint, parse_endpoint
from tests.control_app import LIMIT, App, auth
from tests.fakes import serve_app
from tests.sdk_types import assert_sdk_type

LIST = "/api/deployments/acme"
ONE = "/api/deployments/acme/yolo26n"
MANAGED = "Deployment managed by serve_config.yaml: edit that file and redeploy"


@pytest.fixture(autouse=True)
def checked_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_VALIDATE_RESPONSES", "1")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def key(store: Path) -> str:
    return keys.create_key(store, "main", owner="acme")


@pytest.fixture
def app(store: Path, key: str) -> App:
    return App(store)


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


# -- list ----------------------------------------------------------------------------------------
def test_the_list_is_every_endpoint_as_the_sdks_deployments(app: App, key: str) -> None:
    r = app.client.get("/api/deployments/someone-else", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert_sdk_type(body, sdk.DeploymentsListResponse)
    assert body["total"] == 2 and body["region"] == "us"
    ready, deploying = body["deployments"]
    assert ready == {
        "id": "yolo26n",
        "owner": "acme",  # the key's: every owner sees the config's endpoints as its own
        "model": "yolo26n",
        "task": "detect",
        "deployment": "yolo26n",
        "name": "yolo26n",
        "status": "ready",
        "region": "self-hosted",
        "serviceUrl": "http://testserver/endpoints/yolo26n",
        "resources": {"cpu": 1.0, "memoryGi": 0.0, "minInstances": 1, "maxInstances": 4},
        "deployedAt": "2026-01-01T00:00:00.000Z",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z",
    }
    assert deploying["deployment"] == "yolo26n-seg" and deploying["task"] == "segment"
    assert deploying["status"] == "deploying"
    assert deploying["statusMessage"] == "waiting for replicas to start (0 of 1 running)"
    assert "deployedAt" not in deploying


@pytest.mark.parametrize(
    ("query", "names", "total"),
    [
        ("status=ready", ["yolo26n"], 1),
        ("status=deploying", ["yolo26n-seg"], 1),
        ("status=failed", [], 0),
        ("model=yolo26n-seg", ["yolo26n-seg"], 1),
        ("model=acme/demo/yolo26n", ["yolo26n"], 1),  # a Platform "project/model" path
        ("limit=1", ["yolo26n"], 2),  # total counts before the limit
        ("limit=100&status=ready", ["yolo26n"], 1),
    ],
)
def test_the_list_filters_and_limits(app: App, key: str, query, names, total) -> None:
    r = app.client.get(f"{LIST}?{query}", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert_sdk_type(body, sdk.DeploymentsListResponse)
    assert [d["deployment"] for d in body["deployments"]] == names
    assert body["total"] == total


@pytest.mark.parametrize(
    "query", ["status=running", "status=", "limit=0", "limit=101", "limit=-1", "limit=1.5"]
)
def test_a_bad_query_is_a_400_naming_it(app: App, key: str, query: str) -> None:
    name = query.partition("=")[0]
    assert f"Invalid '{name}'" in error_of(
        app.client.get(f"{LIST}?{query}", headers=auth(key)), 400
    )


def test_the_default_limit_is_20(store: Path, key: str) -> None:
    many = {f"e{i:02d}": serve_app(f"e{i:02d}", "yolo26n") for i in range(25)}
    body = App(store, many).client.get(LIST, headers=auth(key)).json()
    assert len(body["deployments"]) == 20 and body["total"] == 25


def test_requests_read_serve_no_more_than_the_reconcile_passes(app: App, key: str) -> None:
    for path in (LIST, ONE, f"{ONE}/health", LIST):
        assert app.client.get(path, headers=auth(key)).status_code == 200
    assert app.details_read == 1  # the first read; after it, only each reconcile pass reads
    app.reconcile()
    assert app.client.get(LIST, headers=auth(key)).status_code == 200
    assert app.details_read == 2


# -- one deployment ------------------------------------------------------------------------------
def test_retrieve_is_the_list_item_with_metadata(app: App, key: str) -> None:
    r = app.client.get(ONE, headers={**auth(key), "Host": "gpu-box.example:9000"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_sdk_type(body, sdk.DeploymentsRetrieveResponse)
    deployment = body["deployment"]
    assert deployment["metadata"] == {} and deployment["status"] == "ready"
    # Built from the host the caller used, as the SDK's users would reach the endpoint.
    assert deployment["serviceUrl"] == "http://gpu-box.example:9000/endpoints/yolo26n"
    listed = app.client.get(f"{LIST}?status=ready", headers=auth(key)).json()["deployments"][0]
    assert {k: v for k, v in deployment.items() if k != "metadata"} == {
        **listed,
        "serviceUrl": deployment["serviceUrl"],
    }


def test_health_is_one_model_round_trip(app: App, key: str) -> None:
    calls = []
    real = app.model.describe.fn
    app.model.describe.fn = lambda model_id: calls.append(model_id) or real(model_id)
    answers = [app.client.get(f"{ONE}/health", headers=auth(key)) for _ in range(5)]
    for r in answers:
        assert r.status_code == 200, r.text
        assert_sdk_type(r.json(), sdk.DeploymentsHealthResponse)
        assert r.json()["healthy"] is True and r.json()["status"] == 200
        assert r.json()["latencyMs"] >= 0 and "error" not in r.json()
    assert calls == [None]  # its own pinned model, once per health_ttl_s
    assert app.handles == ["yolo26n"]


def test_an_unhealthy_deployment_says_why_in_a_200(app: App, key: str) -> None:
    def wedged(model_id):
        raise TimeoutError

    app.model.describe.fn = wedged
    r = app.client.get(f"{ONE}/health", headers=auth(key))
    assert r.status_code == 200, r.text  # the SDK reads the body of a 2xx only
    body = r.json()
    assert_sdk_type(body, sdk.DeploymentsHealthResponse)
    assert body["healthy"] is False and body["status"] == 504
    assert body["error"] == "Model timed out: no answer in time, retry shortly"


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_managing_a_config_endpoint_is_a_403(store: Path, app: App, key: str, method: str) -> None:
    deployer = keys.create_key(store, "deployer", owner="acme", scope="deploy")
    r = app.client.request(method, ONE, headers=auth(deployer), json={"name": "renamed"})
    assert error_of(r, 403) == MANAGED
    # Without scope `deploy`, the scope is what the 403 names first.
    r = app.client.request(method, ONE, headers=auth(key), json={"name": "renamed"})
    assert "scope 'deploy'" in error_of(r, 403)
    missing = app.client.request(method, f"{LIST}/nope", headers=auth(deployer))
    assert error_of(missing, 404) == "Deployment not found"


ROUTES = [
    ("GET", LIST),
    ("POST", LIST),
    ("GET", ONE),
    ("PATCH", ONE),
    ("DELETE", ONE),
    ("GET", f"{ONE}/health"),
    ("GET", f"{ONE}/logs"),
    ("GET", f"{ONE}/metrics"),
    ("GET", f"{LIST}/nope"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer ul_" + "f" * 40])
def test_every_route_needs_a_key_before_anything(app: App, method, path, header) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = app.client.request(method, path, headers=headers)
    assert "Unauthorized" in error_of(r, 401)
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert app.details_read == 0  # an unauthenticated caller costs no look at Serve


@pytest.mark.parametrize(
    ("method", "path"), [(m, p) for m, p in ROUTES if p != LIST and not p.endswith("nope")]
)
def test_a_key_restricted_away_gets_the_missing_deployments_404(
    store: Path, app: App, method: str, path: str
) -> None:
    narrow = keys.create_key(store, "narrow", models=["yolo26n-seg"])
    missing = app.client.request(method, path.replace("yolo26n", "nope"), headers=auth(narrow))
    r = app.client.request(method, path, headers=auth(narrow))
    assert r.status_code == missing.status_code == 404
    assert r.json() == missing.json() == {"error": "Deployment not found"}


def test_a_restricted_key_lists_only_its_models_endpoints(store: Path, app: App) -> None:
    narrow = keys.create_key(store, "narrow", models=["yolo26n-seg"])
    body = app.client.get(LIST, headers=auth(narrow)).json()
    assert [d["deployment"] for d in body["deployments"]] == ["yolo26n-seg"]
    assert body["total"] == 1
    r = app.client.get(f"{LIST}/yolo26n-seg", headers=auth(narrow))
    assert r.status_code == 200 and r.json()["deployment"]["owner"] == "default"


def test_only_a_keys_own_limit_counts(store: Path, app: App, key: str) -> None:
    own = keys.create_key(store, "own", rate_limit=2)  # before the app reads the store
    for _ in range(LIMIT + 1):  # past the app's default (predict) limit: still uncounted
        r = app.client.get(LIST, headers=auth(key))
        assert r.status_code == 200 and "X-RateLimit-Limit" not in r.headers
    statuses = [app.client.get(ONE, headers=auth(own)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


# -- the reading of Serve's details -------------------------------------------------------------
@pytest.mark.parametrize(
    ("serve_status", "status", "message"),
    [
        ("RUNNING", "ready", ""),
        ("DEPLOYING", "deploying", "waiting for replicas to start (0 of 2 running)"),
        ("DEPLOY_FAILED", "failed", "Deploying app 'x' failed with exception:"),
        ("UNHEALTHY", "failed", "Deploying app 'x' failed with exception:"),
        ("DELETING", "stopping", "Deploying app 'x' failed with exception:"),
        ("NOT_STARTED", "deploying", "NOT_STARTED"),
    ],
)
def test_serve_statuses_as_the_sdks(serve_status: str, status: str, message: str) -> None:
    failure = (
        "Deploying app 'x' failed with exception:\nTraceback (most recent call last):\n"
        '  File "/secret/path/app.py", line 1\nFileNotFoundError: /secret/path/w.pt'
    )
    app = serve_app(
        "x",
        "yolo26n",
        serve_status,
        message="" if serve_status in ("RUNNING", "DEPLOYING", "NOT_STARTED") else failure,
        running=0,
        target=2,
    )
    (endpoint,) = _endpoints({"x": app})
    assert endpoint.platform_status() == (status, message)
    assert "secret" not in endpoint.message  # the traceback stays in Serve's logs


def test_a_deploying_endpoint_says_what_serve_says_when_it_does() -> None:
    app = serve_app("x", "yolo26n", "DEPLOYING", deployment_message="Replica scheduling delayed")
    (endpoint,) = _endpoints({"x": app})
    assert endpoint.platform_status() == ("deploying", "Replica scheduling delayed")


def test_fixed_replicas_are_both_bounds() -> None:
    app = serve_app("x", "yolo26n", autoscaling=None, target=3, running=3, num_cpus=2)
    (endpoint,) = _endpoints({"x": app})
    assert (endpoint.min_replicas, endpoint.max_replicas) == (3, 3)
    assert (endpoint.num_cpus, endpoint.running_replicas) == (2.0, 3)


# -- the official SDK and its CLI, in-process ---------------------------------------------------
def test_the_official_sdk_reads_the_deployments(app: App, key: str) -> None:
    from ultralytics_platform import APIError, Platform

    client = Platform(
        api_key=key, base_url="http://testserver", http_client=app.client, max_retries=0
    )
    listed = client.deployments.list("acme", status="ready")
    assert [d["deployment"] for d in listed["deployments"]] == ["yolo26n"]
    assert client.deployments.retrieve("acme", "yolo26n")["deployment"]["model"] == "yolo26n"
    assert client.deployments.health("acme", "yolo26n")["healthy"] is True
    for call, status in (
        (lambda: client.deployments.update("acme", "yolo26n", body={"name": "x"}), 403),
        (lambda: client.deployments.delete("acme", "yolo26n"), 403),
        (lambda: client.deployments.retrieve("acme", "nope"), 404),
    ):
        with pytest.raises(APIError) as failed:
            call()
        assert failed.value.status_code == status


def test_ul_lists_the_deployments_of_the_keys_owner(app: App, key: str, monkeypatch, capsys):
    from ultralytics_platform import Platform
    from ultralytics_platform import cli as ul

    sent: list[str] = []
    app.client.event_hooks = {"request": [lambda r: sent.append(r.url.path)], "response": []}
    monkeypatch.setattr(ul, "Platform", lambda **kw: Platform(**kw, http_client=app.client))
    monkeypatch.setenv("ULTRALYTICS_PLATFORM_URL", "http://testserver")
    monkeypatch.setenv("ULTRALYTICS_API_KEY", key)
    code = ul.main(["cloud", "deployments", "list"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert sent == ["/api/account/summary", "/api/deployments/acme"]
    assert [d["name"] for d in json.loads(out.out)["deployments"]] == ["yolo26n", "yolo26n-seg"]


# -- helpers -------------------------------------------------------------------------------------
def _endpoints(applications: dict[str, dict[str, Any]]) -> list[Endpoint]:
    return [parse_endpoint(name, app) for name, app in applications.items()]


def test_a_405_names_the_methods_of_every_route_on_the_path(app: App, key: str) -> None:
    r = app.client.put(ONE, headers=auth(key))
    assert error_of(r, 405) == "Method not allowed"
    assert r.headers["Allow"] == "DELETE, GET, HEAD, PATCH"
    assert app.client.put(LIST, headers=auth(key)).headers["Allow"] == "GET, HEAD, POST"


def test_handles_are_made_once_per_endpoint() -> None:
    from deployments.directory import CachedHandles

    made: list[str] = []
    handles = CachedHandles(lambda name: made.append(name) or object())  # type: ignore[arg-type,return-value]
    assert handles("a") is handles("a") and handles("b") is not handles("a")
    assert made == ["a", "b"]

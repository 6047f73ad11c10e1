"""The ingress's routes in-process: Starlette's TestClient over stand-in handles, no Ray.

What needs Ray (batching, multiplexing, faults, redeploys) stays in the live tests; here are the
HTTP contract's details, in seconds: auth and its 401s, 404/413/429 with their headers, error
bodies, the requestId of a 500, CORS, redirects, and the upload paths (multipart, urlencoded).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from deployments.config import EndpointArgs, SharedArgs
from deployments.ingress import IngressApp
from deployments.schemas import AccountSummary
from shared import keys
from shared.assets import example_image
from tests.fakes import FakeLimiter, FakeModel

LIMIT = 3
ORIGIN = "https://app.example"
PREFIX = "/endpoints/yolo26n"


@pytest.fixture(autouse=True)
def checked_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every body these tests see is also held to its route's declared model."""
    monkeypatch.setenv("YOLO_VALIDATE_RESPONSES", "1")


@pytest.fixture(scope="module")
def bus() -> bytes:
    return example_image("bus.jpg").read_bytes()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


@pytest.fixture
def key(store: Path) -> str:
    return keys.create_key(store, "main")


def shared_app(store: Path, model: FakeModel | None = None, **args) -> tuple[TestClient, FakeModel]:
    model = model or FakeModel()
    config = SharedArgs(
        keys_file=str(store), rate_limit={"requests": LIMIT, "window_s": 60}, **args
    )
    ingress = IngressApp(model, config, [FakeLimiter(config.rate_limit.limit())])  # type: ignore[arg-type,list-item]
    return client_for(ingress), model


def dedicated_app(
    store: Path, model: FakeModel | None = None, **args
) -> tuple[TestClient, FakeModel]:
    model = model or FakeModel()
    config = EndpointArgs(
        name="yolo26n", model="yolo26n", keys_file=str(store), limiter_app=None, **args
    )
    ingress = IngressApp(model, config)  # type: ignore[arg-type]
    # Serve mounts a dedicated app under its route prefix: the same root_path here.
    return client_for(ingress, root_path=PREFIX), model


def client_for(ingress: IngressApp, root_path: str = "") -> TestClient:
    # Starlette re-raises a handled 500's exception for the server to log; the response, which
    # is what these tests check, has been sent by then.
    app = ingress.__serve_build_asgi_app__()
    return TestClient(app, root_path=root_path, raise_server_exceptions=False)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response, status: int, needle: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body["error"], str) and needle in body["error"], body
    assert "Traceback" not in response.text
    return body["error"]


def test_a_shared_predict_answers_the_spec_json(store, key, bus) -> None:
    client, model = shared_app(store)
    r = client.post("/api/models/yolo26n/predict", headers=auth(key), files={"file": ("b", bus)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["images", "metadata"]
    image = body["images"][0]
    assert image["shape"] == [1080, 810]
    # The model got the array letterbox-resized to 640 on its long side (shared/letterbox.py);
    # its box comes back in the original's pixels, 1080 / 640 = 1.6875 times its own.
    assert image["results"] == [
        {
            "class": 0,
            "name": "person",
            "confidence": 0.875,
            "box": {"x1": 16.875, "y1": 33.75, "x2": 185.625, "y2": 371.25},
        }
    ]
    assert body["metadata"]["imageCount"] == 1 and body["metadata"]["model"] == "yolo26n.pt"
    assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
    assert r.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)
    assert "total;dur=" in r.headers["Server-Timing"]
    assert model.seen == [("yolo26n", (640, 480, 3))]  # arrays go to the model, never JSON


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Bearer ul_short", "ul_" + "f" * 40]
)
@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_every_401_is_json_with_a_challenge(store, key, bus, header, mode) -> None:
    client, model = (shared_app if mode == "shared" else dedicated_app)(store)
    path = "/api/models/yolo26n/predict" if mode == "shared" else f"{PREFIX}/predict"
    headers = {} if header is None else {"Authorization": header}
    r = client.post(path, headers=headers, files={"file": ("b", bus)})
    assert_error(r, 401, "Unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert model.seen == []


def test_an_unknown_model_is_a_counted_404(store, key, bus) -> None:
    client, _ = shared_app(store)
    r = client.post("/api/models/nope/predict", headers=auth(key), files={"file": ("b", bus)})
    assert assert_error(r, 404) == "Model not found"
    assert r.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)


def test_past_the_limit_a_429_with_retry_after_and_no_model_call(store, key, bus) -> None:
    client, model = shared_app(store)
    statuses = [
        client.post("/api/models/yolo26n/predict", headers=auth(key), files={"file": ("b", bus)})
        for _ in range(LIMIT + 1)
    ]
    assert [r.status_code for r in statuses] == [200] * LIMIT + [429]
    refused = statuses[-1]
    assert_error(refused, 429, "Rate limited")
    assert refused.headers["Retry-After"] == refused.headers["X-RateLimit-Reset"] == "60"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert len(model.seen) == LIMIT


def test_a_restricted_key_gets_the_missing_models_404_on_a_dedicated_endpoint(store, bus) -> None:
    narrow = keys.create_key(store, "narrow", models=["yolo11n"])
    client, model = dedicated_app(store)
    r = client.post(f"{PREFIX}/predict", headers=auth(narrow), files={"file": ("b", bus)})
    assert assert_error(r, 404) == "Model not found"
    assert_error(client.get(f"{PREFIX}/info", headers=auth(narrow)), 404)
    assert model.seen == []


def test_an_upload_over_the_limit_is_a_413_before_it_is_read(store, key) -> None:
    client, model = dedicated_app(store, max_upload_mb=1)
    r = client.post(
        f"{PREFIX}/predict", headers=auth(key), files={"file": ("b", b"\xff" * (2 * 2**20))}
    )
    assert_error(r, 413, "1 MB")
    assert model.seen == []


def test_a_base64_source_urlencoded_as_the_sdk_sends_it(store, key, bus) -> None:
    client, model = dedicated_app(store)
    r = client.post(
        f"{PREFIX}/predict", headers=auth(key), data={"source": base64.b64encode(bus).decode()}
    )
    assert r.status_code == 200, r.text
    assert model.seen == [("yolo26n", (640, 480, 3))]


def test_bad_input_is_a_json_400(store, key) -> None:
    client, _ = dedicated_app(store)
    cases = [
        ({"file": ("b", b"not an image")}, {}, "Invalid image"),
        ({"file": ("b", b"")}, {}, "empty"),
        (None, {"conf": "2"}, "Missing"),
    ]
    for files, data, needle in cases:
        r = client.post(f"{PREFIX}/predict", headers=auth(key), files=files, data=data)
        assert_error(r, 400, needle)
    r = client.post(
        f"{PREFIX}/predict",
        headers={**auth(key), "Content-Type": "application/json"},
        content=b"{}",
    )
    assert_error(r, 400, "multipart/form-data")


def test_an_unexpected_failure_is_a_500_with_a_request_id_and_no_detail(store, key, bus) -> None:
    secret = "boom at /etc/yolo-endpoints/secret"
    client, _ = dedicated_app(store, model=FakeModel(fails=RuntimeError(secret)))
    r = client.post(f"{PREFIX}/predict", headers=auth(key), files={"file": ("b", bus)})
    assert assert_error(r, 500) == "Server error: please retry"
    assert re.fullmatch(r"[0-9a-f]{12}", r.json()["requestId"])
    assert secret not in r.text and "RuntimeError" not in r.text


def test_cors_only_for_configured_origins(store, key) -> None:
    client, _ = dedicated_app(store, cors_origins=(ORIGIN,))
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    ok = client.options(f"{PREFIX}/predict", headers={"Origin": ORIGIN, **preflight})
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in ok.headers
    evil = client.options(
        f"{PREFIX}/predict", headers={"Origin": "https://evil.example", **preflight}
    )
    assert evil.status_code == 400 and "Access-Control-Allow-Origin" not in evil.headers
    default, _ = dedicated_app(store)
    closed = default.get(f"{PREFIX}/health", headers={"Origin": ORIGIN})
    assert not [h for h in closed.headers if h.lower().startswith("access-control-")]


def test_the_page_redirects_to_its_trailing_slash(store) -> None:
    client, _ = dedicated_app(store)
    r = client.get(PREFIX, follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith(f"{PREFIX}/")
    page = client.get(f"{PREFIX}/")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    )


def test_unknown_paths_and_methods_are_json(store, key) -> None:
    client, _ = shared_app(store)
    assert assert_error(client.get("/nope", headers=auth(key)), 404) == "Not found"
    r = client.get("/api/models/yolo26n/predict", headers=auth(key))
    assert assert_error(r, 405) == "Method not allowed" and "POST" in r.headers["Allow"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_dedicated_health_is_one_model_trip_per_interval(store) -> None:
    client, model = dedicated_app(store)
    calls = []
    model.describe.fn = lambda model_id, _real=model.describe.fn: calls.append(1) or _real(model_id)
    answers = [client.get(f"{PREFIX}/health").json() for _ in range(20)]
    assert all(a["healthy"] and a["task"] == "detect" for a in answers)
    assert len(calls) == 1


SUMMARY = "/api/account/summary"


def test_the_account_summary_answers_the_keys_owner(store, key) -> None:
    acme = keys.create_key(store, "acme-ci", owner="acme", scope="deploy")
    client, _ = shared_app(store)
    for caller, owner in ((key, "default"), (acme, "acme")):
        r = client.get(SUMMARY, headers=auth(caller))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["username"] == body["name"] == owner
        AccountSummary.model_validate(body)  # as the response check did, in so many words
    # Not counted against the app's default limit: past it, the key still has its whole budget.
    for _ in range(LIMIT + 1):
        r = client.get(SUMMARY, headers=auth(key))
        assert r.status_code == 200 and "X-RateLimit-Limit" not in r.headers
    counted = client.post(
        "/api/models/nope/predict", headers=auth(key), files={"file": ("b", b"x")}
    )
    assert counted.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)


def test_the_account_summary_counts_a_keys_own_limit(store) -> None:
    own = keys.create_key(store, "own", rate_limit=2)
    client, _ = shared_app(store)
    statuses = [client.get(SUMMARY, headers=auth(own)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[0].headers["X-RateLimit-Limit"] == "2"
    assert_error(statuses[-1], 429, "Rate limited")


@pytest.mark.parametrize("header", [None, "Bearer ul_short", "Bearer ul_" + "f" * 40])
def test_the_account_summary_needs_a_key(store, key, header) -> None:
    client, _ = shared_app(store)
    r = client.get(SUMMARY, headers={} if header is None else {"Authorization": header})
    assert_error(r, 401, "Unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_account_summary_is_the_shared_apps_only(store, key) -> None:
    client, _ = dedicated_app(store)
    assert assert_error(client.get(f"{PREFIX}{SUMMARY}", headers=auth(key)), 404) == "Not found"


def test_the_official_sdk_reads_the_summary(store) -> None:
    from ultralytics_platform import Platform

    acme = keys.create_key(store, "acme-ci", owner="acme")
    client, _ = shared_app(store)
    # The SDK takes an httpx client: Starlette's TestClient is one, over the in-process app.
    sdk = Platform(api_key=acme, base_url="http://testserver", http_client=client, max_retries=0)
    assert sdk.account.summary()["username"] == "acme"


def test_the_sdks_cli_fills_an_omitted_owner_from_the_summary(
    store, bus, tmp_path, monkeypatch, capsys
) -> None:
    """`ul cloud <resource> <operation>` without owner= asks the summary for it first."""
    from ultralytics_platform import Platform
    from ultralytics_platform import cli as ul

    acme = keys.create_key(store, "acme-ci", owner="acme")
    client, model = shared_app(store)
    sent: list[tuple[str, str]] = []
    client.event_hooks = {
        "request": [lambda request: sent.append((request.method, request.url.path))],
        "response": [],
    }
    monkeypatch.setattr(ul, "Platform", lambda **kw: Platform(**kw, http_client=client))
    monkeypatch.setenv("ULTRALYTICS_PLATFORM_URL", "http://testserver")
    monkeypatch.setenv("ULTRALYTICS_API_KEY", acme)
    image = tmp_path / "bus.jpg"
    image.write_bytes(bus)
    body = json.dumps({"file": f"@{image}"})
    code = ul.main(["cloud", "models", "predict", "project=demo", "model=yolo26n", f"body={body}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert sent == [("GET", SUMMARY), ("POST", "/api/models/acme/demo/yolo26n/predict")]
    assert json.loads(out.out)["metadata"]["model"] == "yolo26n.pt"
    assert model.seen == [("yolo26n", (640, 480, 3))]

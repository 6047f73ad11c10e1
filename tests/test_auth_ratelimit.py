"""API keys and the cluster-wide rate limit, against the real Serve instance over HTTP.

The test config gives the shared app the real 20 requests per key in a 10 s window (instead of
60 s) and two Ingress replicas. Each test that counts makes its own keys, so it starts from an
empty window; `server.key` has its own high limit so other test files never see a 429.
Requests that only exercise the limiter send a 32x32 PNG at imgsz=32.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from shared import keys
from tests.conftest import RATE_LIMIT_WINDOW_S

LIMIT = 20
CLI = Path(sys.executable).parent / "yolo-endpoints"
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture(scope="module")
def new_key(server) -> Callable[[str], str]:
    """A fresh key with the app's default limit (so an empty window), usable once returned."""

    def make(name: str) -> str:
        key = keys.create_key(server.keys_file, f"ratelimit-{name}")
        # Every Ingress replica re-reads the store at most REFRESH_S after it changed.
        time.sleep(keys.REFRESH_S + 0.5)
        return key

    return make


def burst(server, key: str, image: bytes, n: int, model: str = "yolo26n", **kw) -> list:
    """`n` predict requests at once, spread over both Ingress replicas by the proxy."""
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(
            pool.map(lambda _: server.predict(model, image, key=key, imgsz=32, **kw), [0] * n)
        )


def serve_details(server) -> dict:
    with urllib.request.urlopen(
        f"{server.ports.dashboard_url}/api/serve/applications/", timeout=10
    ) as response:
        return json.load(response)["applications"]


def running_replicas(server, app: str, deployment: str) -> list[dict]:
    replicas = serve_details(server)[app]["deployments"][deployment]["replicas"]
    return [r for r in replicas if r["state"] == "RUNNING"]


def images_predicted(model_stats) -> int:
    batches = model_stats("shared", "ModelPool")["batch_sizes"]
    return sum(int(size) * count for size, count in batches.items())


def assert_json_error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


def test_the_shared_app_runs_two_ingress_replicas_and_one_replica_per_limiter_shard(
    server,
) -> None:
    assert len(running_replicas(server, "shared", "Ingress")) == 2
    assert len(running_replicas(server, "shared", "Limiter")) == 1
    assert len(running_replicas(server, "shared", "Limiter1")) == 1
    assert len(running_replicas(server, "shared", "ModelPool")) == 1  # images_predicted counts it


def test_exactly_20_of_25_concurrent_requests_pass(server, new_key, tiny_png, model_stats) -> None:
    key = new_key("exact")
    before = images_predicted(model_stats)
    responses = burst(server, key, tiny_png, 25)
    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [200] * LIMIT + [429] * 5, statuses
    admitted = [r for r in responses if r.status_code == 200]
    rejected = [r for r in responses if r.status_code == 429]
    for r in responses:
        assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert 1 <= int(r.headers["X-RateLimit-Reset"]) <= RATE_LIMIT_WINDOW_S
    # One count for the cluster: each admitted request saw a different Remaining, 19 down to 0.
    assert sorted(int(r.headers["X-RateLimit-Remaining"]) for r in admitted) == list(range(LIMIT))
    for r in rejected:
        assert assert_json_error(r, 429).startswith("Rate limited")
        assert r.headers["X-RateLimit-Remaining"] == "0"
        retry_after = int(r.headers["Retry-After"])
        assert 1 <= retry_after <= RATE_LIMIT_WINDOW_S
        assert r.headers["X-RateLimit-Reset"] == r.headers["Retry-After"]
    # Rejected requests never reached the model: it predicted exactly the admitted ones.
    assert images_predicted(model_stats) - before == LIMIT


def test_the_window_rolls(server, new_key, tiny_png) -> None:
    key = new_key("roll")
    assert all(r.status_code == 200 for r in burst(server, key, tiny_png, LIMIT))
    rejected = server.predict("yolo26n", tiny_png, key=key, imgsz=32)
    assert rejected.status_code == 429
    retry_after = int(rejected.headers["Retry-After"])
    # Retry-After is a promise: waiting exactly that long is enough.
    time.sleep(retry_after)
    again = server.predict("yolo26n", tiny_png, key=key, imgsz=32)
    assert again.status_code == 200, again.text
    assert 0 <= int(again.headers["X-RateLimit-Remaining"]) < LIMIT


def test_a_spent_keys_429s_stay_exact_when_the_proxy_answers_them(
    server, new_key, tiny_png
) -> None:
    """After the first 429 the proxy's edge answers the key itself (deployments/edge.py;
    test_metrics counts those answers): the ingress's JSON and headers, counting down, never
    the internal hold header, and the key admitted again once Retry-After has passed."""
    key = new_key("held")
    assert all(r.status_code == 200 for r in burst(server, key, tiny_png, LIMIT))
    answers = [server.predict("yolo26n", tiny_png, key=key, imgsz=32) for _ in range(10)]
    first = answers[0]
    names = {name.lower() for name in first.headers}
    assert "x-yolo-hold" not in names and {h.lower() for h in RATE_HEADERS} <= names
    for r in answers:
        wait = r.headers["Retry-After"]
        expected = re.sub(r"retry in \d+ s", f"retry in {wait} s", first.json()["error"])
        assert assert_json_error(r, 429) == expected
        assert {name.lower() for name in r.headers} == names
        assert r.headers["X-RateLimit-Reset"] == wait and r.headers["X-RateLimit-Remaining"] == "0"
        assert r.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    waits = [int(r.headers["Retry-After"]) for r in answers]
    assert waits == sorted(waits, reverse=True) and 1 <= waits[-1] <= RATE_LIMIT_WINDOW_S
    time.sleep(waits[-1])
    again = server.predict("yolo26n", tiny_png, key=key, imgsz=32)
    assert again.status_code == 200, again.text


def test_two_keys_are_independent(server, new_key, tiny_png) -> None:
    first, second = new_key("first"), new_key("second")
    assert all(r.status_code == 200 for r in burst(server, first, tiny_png, LIMIT))
    assert server.predict("yolo26n", tiny_png, key=first, imgsz=32).status_code == 429
    fresh = server.predict("yolo26n", tiny_png, key=second, imgsz=32)
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)
    # The owner and project form of the route shares the same count.
    routed = requests.post(
        server.url("/api/models/someone/some-project/yolo26n/predict"),
        headers=server.headers(first),
        files={"file": ("image.png", tiny_png)},
        data={"imgsz": "32"},
        timeout=60,
    )
    assert routed.status_code == 429


def test_errors_after_admission_carry_the_headers_and_count(server, new_key, tiny_png) -> None:
    key = new_key("errors")
    not_an_image = server.predict("yolo26n", b"definitely not an image", key=key)
    assert_json_error(not_an_image, 400)
    unknown_model = server.predict("no-such-model", tiny_png, key=key)
    assert assert_json_error(unknown_model, 404) == "Model not found"
    for response, remaining in ((not_an_image, LIMIT - 1), (unknown_model, LIMIT - 2)):
        assert response.headers["X-RateLimit-Limit"] == str(LIMIT)
        assert response.headers["X-RateLimit-Remaining"] == str(remaining)
        assert "X-RateLimit-Reset" in response.headers


def test_dedicated_endpoint_has_no_limit(server, new_key, tiny_png) -> None:
    key = new_key("dedicated")  # a key with the default limit: 50 is well over it
    # One after another: fast enough to be far over 20 per window, and gentle enough not to make
    # the endpoint's autoscaler start replicas that would slow the tests after this one.
    responses = [
        server.predict("", tiny_png, key=key, prefix="/endpoints/yolo26n", imgsz=32)
        for _ in range(50)
    ]
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses[:3]]
    assert not any(h in r.headers for r in responses for h in RATE_HEADERS)


def run_cli(server, *args: str) -> str:
    done = subprocess.run(
        [str(CLI), "--keys-file", str(server.keys_file), "keys", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def settle(server, key: str, want: int, within_s: float = 5, in_a_row: int = 6) -> None:
    """Ask the auth-only `GET /api/models` with `key` until `in_a_row` answers in a row have
    status `want`; fail if that takes `within_s`.

    In a row, because each Ingress replica re-reads the key store on its own schedule: one
    replica's answer says nothing about the other's. Auth-only, so that slow inference on a
    busy machine does not eat the 5 s.
    """
    started = time.monotonic()
    seen: list[tuple[float, int]] = []
    streak = 0
    while streak < in_a_row:
        got = requests.get(server.url("/api/models"), headers=server.headers(key), timeout=30)
        seen.append((round(time.monotonic() - started, 2), got.status_code))
        streak = streak + 1 if got.status_code == want else 0
        assert time.monotonic() - started < within_s, f"not settled on {want}: {seen}"
        time.sleep(0.05)


def test_cli_keys_work_within_5_s_and_revoked_ones_fail(server, tiny_png) -> None:
    key = run_cli(server, "create", "cli-made").splitlines()[-1]
    assert re.fullmatch(r"ul_[0-9a-f]{40}", key)
    settle(server, key, 200)
    assert server.predict("yolo26n", tiny_png, key=key, imgsz=32).status_code == 200
    listing = run_cli(server, "list")
    assert "cli-made" in listing and key not in listing
    run_cli(server, "revoke", "cli-made")
    settle(server, key, 401)
    revoked = server.predict("yolo26n", tiny_png, key=key, imgsz=32)
    assert "revoked" in assert_json_error(revoked, 401)


def test_a_restricted_key_sees_only_its_models(server, tiny_png) -> None:
    key = run_cli(server, "create", "only-n", "--models", "yolo26n").splitlines()[-1]
    settle(server, key, 200)
    hidden = server.predict("yolo11n", tiny_png, key=key, imgsz=32)
    unknown = server.predict("no-such-model", tiny_png, key=key, imgsz=32)
    # Exactly the same answer for "exists but not yours" and "does not exist".
    assert assert_json_error(hidden, 404) == assert_json_error(unknown, 404) == "Model not found"
    models = requests.get(server.url("/api/models"), headers=server.headers(key), timeout=30)
    assert [m["id"] for m in models.json()["models"]] == ["yolo26n"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer ul_tooshort",
        "Bearer " + "ul_" + "f" * 40,  # well formed, unknown
        "ul_" + "f" * 40,  # no scheme
    ],
)
@pytest.mark.parametrize("path", ["/api/models/yolo26n/predict", "/endpoints/yolo26n/predict"])
def test_every_401_is_json(server, tiny_png, authorization: str | None, path: str) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    # The second may be the proxy's edge repeating the first (a 401 holds until the ingress
    # next reads the key store): the same answer either way.
    first, again = (
        requests.post(
            server.url(path), headers=headers, files={"file": ("i.png", tiny_png)}, timeout=30
        )
        for _ in range(2)
    )
    for response in (first, again):
        assert assert_json_error(response, 401).startswith("Unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "f" * 40 not in response.text
        assert "x-yolo-hold" not in response.headers
    assert again.json() == first.json()
    assert {n.lower() for n in again.headers} == {n.lower() for n in first.headers}


def test_limiter_failure_fails_open_and_recovers(server, tiny_png) -> None:
    """Kill the process of the Limiter shard that counts the key: requests still pass,
    uncounted, until Serve has replaced it; then the counting headers come back by themselves."""
    # Both Ingress replicas must have met the limiter already (their first call may wait
    # longer); on a fresh cluster, a few requests reach both with near certainty.
    for _ in range(8):
        assert "X-RateLimit-Remaining" in server.predict("yolo26n", tiny_png, imgsz=32).headers
    (limiter,) = running_replicas(server, "shared", server.limiter_of())
    os.kill(limiter["pid"], signal.SIGKILL)
    saw_fail_open = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        response = server.predict("yolo26n", tiny_png, imgsz=32)
        assert response.status_code == 200, response.text
        assert "X-RateLimit-Limit" in response.headers
        if "X-RateLimit-Remaining" not in response.headers:
            saw_fail_open = True
            assert "X-RateLimit-Reset" not in response.headers
        elif saw_fail_open:
            break
        time.sleep(0.2)
    assert saw_fail_open, "requests right after the kill should have been admitted uncounted"
    assert "X-RateLimit-Remaining" in response.headers, "the limiter did not come back"
    (replacement,) = running_replicas(server, "shared", server.limiter_of())
    assert replacement["pid"] != limiter["pid"]

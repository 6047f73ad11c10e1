"""Every key rule on every keyed route, over real HTTP (deployments/gate.py decides them all).

Routes: the shared predict route and its SDK form, a dedicated endpoint's predict and info,
and the SDK's deployment route. Rules: a restricted key reaches its model; for another model
it gets exactly the 404 a missing model gets on that route; a revoked key gets 401; a key's own
`rate_limit` holds on every route (the shared default of 20 applies to the shared routes only,
which tests/test_auth_ratelimit.py covers).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from shared import keys

ALLOWED, OTHER, MISSING = "yolo26n", "yolo26n-seg", "nope"
OWN_LIMIT = 2
# route name -> (method, path for a model ID)
ROUTES: dict[str, tuple[str, Callable[[str], str]]] = {
    "shared": ("POST", lambda m: f"/api/models/{m}/predict"),
    "sdk-model": ("POST", lambda m: f"/api/models/acme/demo/{m}/predict"),
    "dedicated": ("POST", lambda m: f"/endpoints/{m}/predict"),
    "dedicated-info": ("GET", lambda m: f"/endpoints/{m}/info"),
    "sdk-deployment": ("POST", lambda m: f"/api/deployments/acme/{m}/predict"),
}


@pytest.fixture(scope="module")
def made(server) -> dict[str, str]:
    """The keys these tests use, created at once, known to every ingress once returned."""
    stamp = time.monotonic_ns()
    made = {"narrow": keys.create_key(server.keys_file, f"rules-narrow-{stamp}", models=[ALLOWED])}
    made["revoked"] = keys.create_key(server.keys_file, f"rules-revoked-{stamp}")
    made["revoked-name"] = f"rules-revoked-{stamp}"
    for route in ROUTES:
        made[f"own-{route}"] = keys.create_key(
            server.keys_file, f"rules-own-{route}-{stamp}", rate_limit=OWN_LIMIT
        )
    time.sleep(keys.REFRESH_S + 0.5)
    return made


def call(server, route: str, model: str, key: str, image: bytes) -> requests.Response:
    method, path = ROUTES[route]
    kwargs = {"files": {"file": ("a.png", image)}, "data": {"imgsz": "32"}}
    return requests.request(
        method,
        server.url(path(model)),
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        **(kwargs if method == "POST" else {}),
    )


@pytest.mark.parametrize("route", ROUTES)
def test_a_restricted_key_reaches_its_model(server, made, tiny_png, route: str) -> None:
    r = call(server, route, ALLOWED, made["narrow"], tiny_png)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("route", ROUTES)
def test_another_model_is_the_missing_models_404(server, made, tiny_png, route: str) -> None:
    other = call(server, route, OTHER, made["narrow"], tiny_png)
    missing = call(server, route, MISSING, made["narrow"], tiny_png)
    # The other model exists (it answers an unrestricted key) ...
    assert call(server, route, OTHER, server.key, tiny_png).status_code == 200
    # ... yet the restricted key cannot tell it from one that does not.
    assert other.status_code == missing.status_code == 404, (other.text, missing.text)
    assert other.json() == missing.json() and set(other.json()) == {"error"}
    assert other.headers["content-type"] == missing.headers["content-type"]


@pytest.fixture(scope="module")
def revoked(server, made, tiny_png) -> str:
    """A key that worked, then was revoked (every ingress knows it once returned)."""
    assert call(server, "dedicated", ALLOWED, made["revoked"], tiny_png).status_code == 200
    assert keys.revoke_key(server.keys_file, made["revoked-name"])
    time.sleep(keys.REFRESH_S + 0.5)
    return made["revoked"]


@pytest.mark.parametrize("route", ROUTES)
def test_a_revoked_key_is_refused(server, revoked, tiny_png, route: str) -> None:
    r = call(server, route, ALLOWED, revoked, tiny_png)
    assert r.status_code == 401 and "revoked" in r.json()["error"], r.text
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("route", ROUTES)
def test_a_keys_own_limit_holds(server, made, tiny_png, route: str) -> None:
    key = made[f"own-{route}"]
    answers = [call(server, route, ALLOWED, key, tiny_png) for _ in range(OWN_LIMIT + 1)]
    assert [a.status_code for a in answers] == [200] * OWN_LIMIT + [429], [a.text for a in answers]
    assert answers[0].headers["X-RateLimit-Limit"] == str(OWN_LIMIT)
    assert answers[0].headers["X-RateLimit-Remaining"] == str(OWN_LIMIT - 1)
    refused = answers[-1]
    assert int(refused.headers["Retry-After"]) >= 1 and "Rate limited" in refused.json()["error"]

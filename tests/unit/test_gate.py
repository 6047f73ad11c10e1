"""The admission rules every keyed route shares (deployments/gate.py), without Ray.

Every rule on every kind of route: an allowed model, another model (the route's own 404, as for
a missing one), a revoked key, a key's own limit, and the app's default limit only where the
route counts by default. The limiter is a real SlidingWindow behind a stand-in for its handle
(tests/fakes.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from deployments.gate import (
    ACCOUNT_ROUTE,
    DEDICATED_INFO,
    DEDICATED_ROUTE,
    FORWARDED_ROUTE,
    SHARED_LISTING,
    SHARED_ROUTE,
    Gate,
    RouteRules,
)
from deployments.limiter import LimiterShards
from shared import keys
from shared.errors import ApiError
from shared.ratelimit import RateLimit
from tests.fakes import FakeLimiter

ROUTES = {
    "shared": SHARED_ROUTE,
    "dedicated": DEDICATED_ROUTE,
    "info": DEDICATED_INFO,
    "forwarded": FORWARDED_ROUTE,
}
DEFAULT = 3


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


def gate_for(store: Path, default: int | None = DEFAULT) -> tuple[Gate, FakeLimiter]:
    limiter = FakeLimiter(RateLimit(DEFAULT, 60))
    shards = LimiterShards([limiter])  # type: ignore[list-item]
    return Gate(keys.KeyRing(store, refresh_s=0), shards, default), limiter


def admit(gate: Gate, key: str, rules: RouteRules, model: str | None):
    return asyncio.run(gate.admit(f"Bearer {key}", rules, model))


def status_of(gate: Gate, key: str, rules: RouteRules, model: str | None) -> int:
    try:
        admit(gate, key, rules, model)
    except ApiError as exc:
        return exc.status
    return 200


@pytest.mark.parametrize("route", ROUTES)
def test_a_restricted_key_gets_the_routes_404_for_another_model(store: Path, route: str) -> None:
    rules = ROUTES[route]
    key = keys.create_key(store, "narrow", models=["yolo26n"], rate_limit=1000)
    gate, _ = gate_for(store)
    assert admit(gate, key, rules, "yolo26n").key.name == "narrow"
    with pytest.raises(ApiError) as other:
        admit(gate, key, rules, "yolo26n-seg")
    with pytest.raises(ApiError) as missing:
        admit(gate, key, rules, None)
    # Indistinguishable from a model (or deployment) that does not exist.
    assert other.value.status == missing.value.status == 404
    assert other.value.message == missing.value.message == rules.not_found


@pytest.mark.parametrize("route", ROUTES)
def test_a_revoked_key_is_401_on_every_route(store: Path, route: str) -> None:
    key = keys.create_key(store, "gone")
    gate, _ = gate_for(store)
    assert status_of(gate, key, ROUTES[route], "yolo26n") == 200
    keys.revoke_key(store, "gone")
    assert status_of(gate, key, ROUTES[route], "yolo26n") == 401


@pytest.mark.parametrize("route", ROUTES)
def test_a_keys_own_limit_counts_on_every_route(store: Path, route: str) -> None:
    key = keys.create_key(store, "own", rate_limit=2)
    gate, _ = gate_for(store)
    statuses = [status_of(gate, key, ROUTES[route], "yolo26n") for _ in range(4)]
    assert statuses == [200, 200, 429, 429]


def test_the_default_limit_counts_on_shared_routes_only(store: Path) -> None:
    key = keys.create_key(store, "plain")
    gate, limiter = gate_for(store)
    for rules in (DEDICATED_ROUTE, DEDICATED_INFO, FORWARDED_ROUTE):
        assert [status_of(gate, key, rules, "yolo26n") for _ in range(DEFAULT + 2)] == [200] * 5
    assert limiter.calls == 0  # dedicated routes never ask the limiter for such a key
    shared = [status_of(gate, key, SHARED_ROUTE, "yolo26n") for _ in range(DEFAULT + 1)]
    assert shared == [200] * DEFAULT + [429]


def test_limits_count_before_the_model_check_so_404s_count(store: Path) -> None:
    key = keys.create_key(store, "prober")
    gate, _ = gate_for(store)
    assert [status_of(gate, key, SHARED_ROUTE, None) for _ in range(DEFAULT)] == [404] * DEFAULT
    assert status_of(gate, key, SHARED_ROUTE, "yolo26n") == 429


def test_a_429_names_the_window_and_carries_retry_after(store: Path) -> None:
    key = keys.create_key(store, "own", rate_limit=1)
    gate, _ = gate_for(store, default=None)
    admitted = admit(gate, key, DEDICATED_ROUTE, "yolo26n")
    assert admitted.headers["X-RateLimit-Limit"] == "1"
    assert admitted.headers["X-RateLimit-Remaining"] == "0"
    with pytest.raises(ApiError) as refused:
        admit(gate, key, DEDICATED_ROUTE, "yolo26n")
    assert refused.value.status == 429 and "per 60 s" in refused.value.message
    assert refused.value.headers["Retry-After"] == "60"


def test_a_listing_checks_no_model_and_counts_only_a_keys_own_limit(store: Path) -> None:
    key = keys.create_key(store, "lister", models=["yolo26n"])
    own = keys.create_key(store, "own", rate_limit=1)
    gate, limiter = gate_for(store)
    for _ in range(DEFAULT + 1):
        assert admit(gate, key, SHARED_LISTING, None).key.name == "lister"
    assert limiter.calls == 0
    assert [status_of(gate, own, SHARED_LISTING, None) for _ in range(2)] == [200, 429]


def test_the_account_summary_counts_only_a_keys_own_limit(store: Path) -> None:
    plain = keys.create_key(store, "plain", models=["yolo26n"])
    own = keys.create_key(store, "own", rate_limit=2)
    gate, limiter = gate_for(store)
    # The SDK's CLI asks it before calls: it must not spend the default (predict) budget.
    assert [status_of(gate, plain, ACCOUNT_ROUTE, None) for _ in range(DEFAULT + 2)] == [200] * 5
    assert limiter.calls == 0
    assert [status_of(gate, own, ACCOUNT_ROUTE, None) for _ in range(3)] == [200, 200, 429]


def test_an_unreachable_limiter_fails_open(store: Path) -> None:
    class Died:
        def remote(self, *args):
            raise RuntimeError("limiter replica died")

    class Down:
        acquire = Died()

    key = keys.create_key(store, "own", rate_limit=1)
    shards = LimiterShards([Down()])  # type: ignore[list-item]
    gate = Gate(keys.KeyRing(store, refresh_s=0), shards, DEFAULT)
    for _ in range(3):
        admitted = admit(gate, key, DEDICATED_ROUTE, "yolo26n")
        assert admitted.headers == {"X-RateLimit-Limit": "1"}  # uncounted: no Remaining


def test_several_images_count_as_that_many_requests_or_none(store: Path) -> None:
    gate, _ = gate_for(store)
    key = keys.create_key(store, "k")
    admission = admit(gate, key, SHARED_ROUTE, "yolo26n")
    assert admission.headers["X-RateLimit-Remaining"] == "2"
    counted = asyncio.run(gate.count_images(admission, 2))
    assert counted.headers["X-RateLimit-Remaining"] == "1"
    # One left: a request of two images is refused whole, and its admission is given back.
    second = admit(gate, key, SHARED_ROUTE, "yolo26n")
    with pytest.raises(ApiError) as refused:
        asyncio.run(gate.count_images(second, 2))
    assert refused.value.status == 429 and "2 images count as 2 requests" in refused.value.message
    assert refused.value.headers["X-RateLimit-Remaining"] == "1"
    assert admit(gate, key, SHARED_ROUTE, "yolo26n").headers["X-RateLimit-Remaining"] == "0"


def test_images_on_an_uncounted_route_stay_uncounted(store: Path) -> None:
    gate, limiter = gate_for(store)
    key = keys.create_key(store, "k")
    admission = admit(gate, key, DEDICATED_ROUTE, "yolo26n")
    assert asyncio.run(gate.count_images(admission, 16)) == admission
    assert limiter.calls == 0


def test_a_refused_key_is_answered_locally_until_its_retry_after(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, limiter = gate_for(store)
    key = keys.create_key(store, "spent")
    assert [status_of(gate, key, SHARED_ROUTE, "yolo26n") for _ in range(DEFAULT)] == [200] * 3
    with pytest.raises(ApiError) as first:
        admit(gate, key, SHARED_ROUTE, "yolo26n")
    calls = limiter.calls
    now = time.monotonic()
    # Until the refusal's deadline: 429s with a Retry-After counting down, and no limiter call.
    monkeypatch.setattr(time, "monotonic", lambda: now + 30.5)
    with pytest.raises(ApiError) as local:
        admit(gate, key, SHARED_ROUTE, "yolo26n")
    assert local.value.status == 429 and limiter.calls == calls
    assert int(first.value.headers["Retry-After"]) == 60
    assert local.value.headers["Retry-After"] == "30"  # 60 - 30.5, rounded up
    assert local.value.headers["X-RateLimit-Remaining"] == "0"
    # Past it the limiter is asked again (here its own clock has not moved: still refused).
    monkeypatch.setattr(time, "monotonic", lambda: now + 61)
    with pytest.raises(ApiError):
        admit(gate, key, SHARED_ROUTE, "yolo26n")
    assert limiter.calls == calls + 1


def test_a_refusal_of_several_images_is_not_remembered(store: Path) -> None:
    gate, _ = gate_for(store)
    key = keys.create_key(store, "images")
    admit(gate, key, SHARED_ROUTE, "yolo26n")
    admission = admit(gate, key, SHARED_ROUTE, "yolo26n")
    with pytest.raises(ApiError):
        asyncio.run(gate.count_images(admission, 3))  # 3 do not fit beside the first one
    assert admit(gate, key, SHARED_ROUTE, "yolo26n").headers["X-RateLimit-Remaining"] == "1"


def test_a_refusal_holds_until_its_deadline_and_one_of_several_images_does_not(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, _ = gate_for(store)
    key = keys.create_key(store, "held")
    for _ in range(DEFAULT - 1):
        admit(gate, key, SHARED_ROUTE, "yolo26n")
    admission = admit(gate, key, SHARED_ROUTE, "yolo26n-seg")
    with pytest.raises(ApiError) as several:
        asyncio.run(gate.count_images(admission, 2))
    assert several.value.status == 429 and several.value.hold is None  # one may still fit
    admit(gate, key, SHARED_ROUTE, "yolo26n")  # ... and it did
    now = time.monotonic()
    with pytest.raises(ApiError) as fresh:
        admit(gate, key, SHARED_ROUTE, "yolo26n")
    hold = fresh.value.hold
    assert hold is not None and hold.status == 429 and 59 < hold.seconds <= 60
    assert hold.refusal is not None and hold.refusal.limit == DEFAULT
    monkeypatch.setattr(time, "monotonic", lambda: now + 30.5)
    with pytest.raises(ApiError) as local:
        admit(gate, key, SHARED_ROUTE, "yolo26n")
    assert local.value.hold is not None and 29 < local.value.hold.seconds < 30


def test_a_401_holds_until_the_key_ring_next_reads_the_store(store: Path) -> None:
    keys.create_key(store, "someone")
    ring = keys.KeyRing(store, refresh_s=1.0)
    gate = Gate(ring, None, DEFAULT)
    for header in (None, "Bearer nonsense", f"Bearer ul_{'0' * 40}"):
        with pytest.raises(ApiError) as unknown:
            asyncio.run(gate.admit(header, SHARED_ROUTE, "yolo26n"))
        hold = unknown.value.hold
        assert unknown.value.status == 401 and hold is not None and hold.status == 401
        assert 0 <= hold.seconds <= 1.0 and hold.refusal is None

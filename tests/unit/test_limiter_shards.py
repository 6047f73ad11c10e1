"""Key hashes sharded over several limiters (deployments/limiter.py), without Ray: each key
always reaches the same shard, from every process, so each key's count stays exact."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from deployments import limiter as limiter_module
from deployments.gate import SHARED_ROUTE, Gate
from deployments.limiter import LimiterShards, shard_name
from shared import keys
from shared.errors import ApiError
from shared.ratelimit import RateLimit, shard_of
from tests.fakes import FakeLimiter, _Method

LIMIT = 3


def test_a_key_has_one_shard_whatever_the_process_hash_seed() -> None:
    ids = [f"{n:016x}" for n in range(0, 10**6, 7919)]
    program = (
        "import sys; from shared.ratelimit import shard_of; "
        "print([shard_of(i, 4) for i in sys.argv[1:]])"
    )
    answers = {
        subprocess.run(
            [sys.executable, "-c", program, *ids],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(answers) == 1
    assert answers == {str([shard_of(i, 4) for i in ids]) + "\n"}


def test_keys_spread_evenly_over_the_shards() -> None:
    counts = [0] * 4
    for _ in range(8000):
        counts[shard_of(secrets.token_hex(8), 4)] += 1
    assert all(1700 < count < 2300 for count in counts), counts
    assert {shard_of(secrets.token_hex(8), 1) for _ in range(100)} == {0}


def test_shard_zero_keeps_the_unsharded_name() -> None:
    assert [shard_name(i) for i in range(3)] == ["Limiter", "Limiter1", "Limiter2"]


def _keys_on_every_shard(store: Path, shards: int, rate_limit: int | None = None) -> list[str]:
    """New keys (random, as ever) until every shard counts at least two of them."""
    ring = keys.KeyRing(store, refresh_s=0)
    made: dict[int, list[str]] = {}
    while len(made) < shards or min(len(k) for k in made.values()) < 2:
        key = keys.create_key(store, f"k{secrets.token_hex(4)}", rate_limit=rate_limit)
        made.setdefault(shard_of(ring.authenticate(f"Bearer {key}").id, shards), []).append(key)
    return [key for group in made.values() for key in group]


def _admitted(gate: Gate, key: str, tries: int) -> int:
    admitted = 0
    for _ in range(tries):
        try:
            asyncio.run(gate.admit(f"Bearer {key}", SHARED_ROUTE, "yolo26n"))
            admitted += 1
        except ApiError as exc:
            assert exc.status == 429
    return admitted


def test_each_key_is_counted_exactly_by_its_own_shard(tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    shards = [FakeLimiter(RateLimit(LIMIT, 60)) for _ in range(4)]
    gate = Gate(keys.KeyRing(store, refresh_s=0), LimiterShards(shards), LIMIT)  # type: ignore[arg-type]
    api_keys = _keys_on_every_shard(store, 4)
    ring = keys.KeyRing(store, refresh_s=0)
    for key in api_keys:
        assert _admitted(gate, key, LIMIT + 2) == LIMIT
    ids = {ring.authenticate(f"Bearer {key}").id for key in api_keys}
    # Every key reached one shard only, the one shard_of names, and every shard had some.
    for index, shard in enumerate(shards):
        assert shard.keys and shard.keys == {i for i in ids if shard_of(i, 4) == index}


def test_another_app_learns_the_shard_count_before_counting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dedicated endpoint's gate asks shard 0 how many shards there are; while it cannot
    answer, nothing is counted anywhere (fail open), never in a shard that is not the key's."""
    shards = {shard_name(i): FakeLimiter(RateLimit(LIMIT, 60), shards=3) for i in range(3)}
    deployed = False

    def count() -> int:
        if not deployed:
            raise RuntimeError("the shared app is not deployed yet")
        return 3

    shards[shard_name(0)].shards = _Method(count)  # type: ignore[assignment]

    def handle(name: str, app_name: str, _check_exists: bool = True) -> FakeLimiter:
        assert app_name == "shared"
        return shards[name]

    monkeypatch.setattr(limiter_module.serve, "get_deployment_handle", handle)
    store = tmp_path / "keys.json"
    gate = Gate(keys.KeyRing(store, refresh_s=0), LimiterShards.in_app("shared"), None)
    own = _keys_on_every_shard(store, 3, rate_limit=LIMIT)
    assert _admitted(gate, own[0], 5) == 5  # uncounted while shard 0 cannot answer
    assert sum(s.calls for s in shards.values()) == 0

    deployed = True  # the next call asks again
    for key in own:
        assert _admitted(gate, key, LIMIT + 1) == LIMIT
    assert all(s.keys for s in shards.values())


class _Slow:
    """A shard whose every answer takes `delay_s` (Serve's router set-up, a busy replica)."""

    def __init__(self, delay_s: float):
        self.inner = FakeLimiter(RateLimit(LIMIT, 60))
        self.delay_s = delay_s
        self.acquire = self

    def remote(self, key_id: str, limit: int | None):
        return self._answer(key_id, limit)

    async def _answer(self, key_id: str, limit: int | None):
        await asyncio.sleep(self.delay_s)
        return self.inner.window.acquire(key_id, 0.0, limit)


def test_the_first_call_to_each_shard_gets_the_long_wait(tmp_path: Path) -> None:
    """Each shard's first call may take as long as a router's set-up; later ones may not."""
    store = tmp_path / "keys.json"
    shards = [_Slow(0.05), _Slow(0.05)]
    gate = Gate(
        keys.KeyRing(store, refresh_s=0),
        LimiterShards(shards),  # type: ignore[arg-type]
        LIMIT,
        timeout_s=0.01,
        first_timeout_s=5.0,
    )
    ring = keys.KeyRing(store, refresh_s=0)
    by_shard: dict[int, str] = {}
    while len(by_shard) < 2:
        key = keys.create_key(store, f"k{len(by_shard)}-{secrets.token_hex(2)}")
        by_shard.setdefault(shard_of(ring.authenticate(f"Bearer {key}").id, 2), key)

    async def remaining(key: str) -> str | None:
        admission = await gate.admit(f"Bearer {key}", SHARED_ROUTE, "yolo26n")
        return admission.headers.get("X-RateLimit-Remaining")

    for key in by_shard.values():
        assert asyncio.run(remaining(key)) == str(LIMIT - 1)  # first: waited for, counted
        assert asyncio.run(remaining(key)) is None  # then too slow: admitted uncounted

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
    api_keys = [keys.create_key(store, f"k{n}") for n in range(24)]
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
    own = [keys.create_key(store, f"own{n}", rate_limit=LIMIT) for n in range(9)]
    assert _admitted(gate, own[0], 5) == 5  # uncounted while shard 0 cannot answer
    assert sum(s.calls for s in shards.values()) == 0

    deployed = True  # the next call asks again
    for key in own:
        assert _admitted(gate, key, LIMIT + 1) == LIMIT
    assert all(s.keys for s in shards.values())

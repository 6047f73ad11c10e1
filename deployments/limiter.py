"""The cluster-wide rate limiter: key hashes sharded over N single-replica Serve deployments.

Every ingress replica asks the shard that `shard_of(key id)` names before admitting a request.
Each key always reaches the same shard, so each key's count is exact however many ingress
replicas there are. A limiter per ingress replica would admit N times the limit. Each shard must
therefore stay at exactly one replica: never give one autoscaling. Shards spread the request
rate, not any one key's: a key's calls all go to one process.

`acquire` is a coroutine with no `await` inside, so calls run one after another on the replica's
event loop and check-and-count is atomic without a lock. The clock is this process's monotonic
clock, the only one that matters for the keys it counts.

If a shard's replica dies, Serve's controller starts a new one by itself. Its windows start
empty, so a restart forgives at most one window of its keys' traffic. Until it is back the gate
fails open for those keys (gate.py); the other shards' keys are counted as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.config import HEALTH_CHECK_PERIOD_S
from shared.ratelimit import Decision, RateLimit, SlidingWindow, shard_of


def shard_name(index: int) -> str:
    """Shard 0 keeps the unsharded deployment's name: one shard is the limiter as it was."""
    return "Limiter" if index == 0 else f"Limiter{index}"


@serve.deployment(
    num_replicas=1,
    # Each call is microseconds of work: never queue callers behind a small concurrency cap.
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 0},
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
class Limiter:
    def __init__(self, config: RateLimit, shards: int = 1):
        self.window = SlidingWindow(config)
        self.shard_count = shards

    async def acquire(self, key_id: str, limit: int | None = None) -> Decision:
        """Count one request of `key_id` (a non-secret key hash prefix) if it fits."""
        return self.window.acquire(key_id, time.monotonic(), limit)

    async def top_up(self, key_id: str, limit: int | None, held: int, cost: int) -> Decision:
        """A request found to be `cost` predictions (several images) after `held` were
        counted at admission: counted whole, or refused and nothing counted."""
        return self.window.top_up(key_id, time.monotonic(), limit, held, cost)

    async def shards(self) -> int:
        """How many shards the keys are spread over (what another app's gate asks shard 0)."""
        return self.shard_count


class LimiterShards:
    """How a gate reaches the shard of each key.

    The shared app binds its shards and hands them over. A dedicated endpoint counts keys with a
    limit of their own in the shared app's limiter, and learns how many shards there are from
    shard 0 on its first call (`in_app`); until that answers, it knows no shard (fail open), so
    it never counts a key in a shard that is not the key's.
    """

    def __init__(self, handles: Sequence[DeploymentHandle], app_name: str | None = None):
        self._handles = list(handles)
        self._app_name = app_name
        self._known = app_name is None
        self._lock = asyncio.Lock()

    @classmethod
    def in_app(cls, app_name: str) -> LimiterShards:
        # Without checking that the app exists: a dedicated app may come up first.
        shard0 = serve.get_deployment_handle(shard_name(0), app_name, _check_exists=False)
        return cls([shard0], app_name)

    async def for_key(self, key_id: str) -> DeploymentHandle:
        if not self._known:
            await self._discover()
        return self._handles[shard_of(key_id, len(self._handles))]

    async def _discover(self) -> None:
        async with self._lock:
            if self._known:
                return
            count = await self._handles[0].shards.remote()
            self._handles += [
                serve.get_deployment_handle(shard_name(i), self._app_name, _check_exists=False)
                for i in range(1, count)
            ]
            self._known = True

"""The cluster-wide rate limiter: one Serve replica that keeps every key's sliding window.

Every ingress replica of the shared app asks this one replica before admitting a request, so the
count is exact however many ingress replicas there are (a limiter per ingress replica would admit
N times the limit). It must therefore stay at exactly one replica: never give it autoscaling.

`acquire` is a coroutine with no `await` inside, so calls run one after another on the replica's
event loop and check-and-count is atomic without a lock. The clock is this process's monotonic
clock, the only one that matters.

If the replica dies, Serve's controller starts a new one by itself; its windows start empty, so a
restart forgives at most one window of traffic. Until it is back the gate fails open (gate.py).
"""

from __future__ import annotations

import time

from ray import serve

from shared.ratelimit import Decision, RateLimit, SlidingWindow


@serve.deployment(
    num_replicas=1,
    # Each call is microseconds of work: never queue callers behind a small concurrency cap.
    max_ongoing_requests=1000,
    ray_actor_options={"num_cpus": 0},
)
class Limiter:
    def __init__(self, config: RateLimit):
        self.window = SlidingWindow(config)

    async def acquire(self, key_id: str, limit: int | None = None) -> Decision:
        """Count one request of `key_id` (a non-secret key hash prefix) if it fits."""
        return self.window.acquire(key_id, time.monotonic(), limit)

    async def top_up(self, key_id: str, limit: int | None, held: int, cost: int) -> Decision:
        """A request found to be `cost` predictions (several images) after `held` were
        counted at admission: counted whole, or refused and nothing counted."""
        return self.window.top_up(key_id, time.monotonic(), limit, held, cost)

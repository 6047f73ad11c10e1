"""One answer per interval from an expensive async check, however many callers ask.

A public `/health` route that made a model round trip per call would let a flood of health
checks queue ahead of predictions. Behind a `CachedProbe`, callers within `ttl_s` of the last
answer get that answer, and callers arriving while a check is running wait for that one
(single flight), so at most one check per interval leaves the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class CachedProbe(Generic[T]):
    def __init__(self, check: Callable[[], Awaitable[T]], ttl_s: float = 1.0):
        self.check = check
        self.ttl_s = ttl_s
        self.checks = 0  # how many checks ran: what the flood tests count
        self._answer: T | None = None
        self._answered_at = -float("inf")
        self._running: asyncio.Task[T] | None = None

    async def get(self) -> T:
        if self._answer is not None and time.monotonic() - self._answered_at < self.ttl_s:
            return self._answer
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        # shield: one caller giving up (a client disconnect) must not cancel the others' check.
        return await asyncio.shield(self._running)

    async def _run(self) -> T:
        try:
            self.checks += 1
            answer = await self.check()
            self._answer, self._answered_at = answer, time.monotonic()
            return answer
        finally:
            self._running = None

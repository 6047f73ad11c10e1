"""A per-process budget of bytes that concurrent image decodes may hold at once.

Each decode reserves its header-derived peak (`shared.images.decode_peak_bytes`) before it
starts and gives it back when it ends, so however many large images arrive together, the decodes
running in one ingress replica never hold more than the budget. Waiters are served first come,
first served (a large image is not starved by a stream of small ones); one that cannot get its
share within `wait_s` is refused with a JSON 503 and `Retry-After`, which a client retries,
instead of the process being killed for memory, which takes every other request with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from shared.errors import ApiError

MB = 1024 * 1024


def budget_exhausted() -> ApiError:
    return ApiError(
        503,
        "Server busy: too many large images are being decoded, retry shortly",
        {"Retry-After": "1"},
    )


class MemoryBudget:
    """Bytes reserved by running decodes; one event loop's worth (an ingress replica's)."""

    def __init__(self, total_bytes: int, wait_s: float):
        if total_bytes <= 0:
            raise ValueError("a memory budget needs a positive size")
        self.total = total_bytes
        self.wait_s = wait_s
        self.reserved = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _share(self, nbytes: int) -> int:
        # A file that alone needs more than the budget runs alone rather than never.
        return max(1, min(nbytes, self.total))

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[None]:
        """Hold `nbytes` for the duration of the block; ApiError 503 if not given in time."""
        share = self._share(nbytes)
        if not self._waiters and self.reserved + share <= self.total:
            self.reserved += share
        else:
            await self._wait(share)
        try:
            yield
        finally:
            self.reserved -= share
            self._wake()

    async def _wait(self, share: int) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (share, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except TimeoutError:
            if future.done():  # granted just as the wait ran out: keep it
                return
            self._waiters.remove(entry)
            self._wake()  # the waiters behind this one may fit now
            raise budget_exhausted() from None
        except asyncio.CancelledError:
            if future.done():
                self.reserved -= share  # granted, but nobody will use or release it
            else:
                self._waiters.remove(entry)
            self._wake()
            raise

    def _wake(self) -> None:
        """Grant waiting shares in arrival order while they fit."""
        while self._waiters:
            share, future = self._waiters[0]
            if self.reserved + share > self.total:
                return
            self._waiters.popleft()
            self.reserved += share
            future.set_result(None)

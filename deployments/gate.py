"""The gate in front of the predict routes: who is calling (401) and whether they may now (429).

The ingress passes every predict request through `Gate.admit` before it reads the upload, so a
rejected request never reaches a model replica. The admission's headers (`X-RateLimit-*`) go on
every response of the route after that, errors included.

When the limiter is unavailable (its replica dead or restarting, or no answer within `timeout_s`)
the gate FAILS OPEN: the request is admitted uncounted and a warning is logged (at most one per
`WARN_EVERY_S` per ingress replica, with a count; never key material). Such responses carry
`X-RateLimit-Limit` but omit `X-RateLimit-Remaining` and `X-RateLimit-Reset`, since nobody
counted. Open, not closed, because the limit is about fairness: a limiter outage must not take
inference down with it. Serve restarts the limiter replica by itself, and the next call that
reaches it is counted again; nothing here needs resetting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.requests import Request

from shared.errors import ApiError
from shared.keys import KeyRecord, KeyRing
from shared.ratelimit import Decision, RateLimit

logger = logging.getLogger("ray.serve")

WARN_EVERY_S = 10.0


@dataclass(frozen=True)
class Admission:
    key: KeyRecord
    headers: dict[str, str]  # to attach to every response for this request


async def _result(response: DeploymentResponse) -> Any:
    return await response


class Gate:
    def __init__(
        self,
        keys: KeyRing,
        limiter: DeploymentHandle | None = None,
        limit: RateLimit | None = None,
        timeout_s: float = 0.5,
        first_timeout_s: float = 3.0,
    ):
        if (limiter is None) != (limit is None):
            raise ValueError("a limiter needs its RateLimit, and a RateLimit its limiter")
        self.keys = keys
        self.limiter = limiter
        self.limit = limit
        self.timeout_s = timeout_s
        # A replica's first handle call also sets up Serve's router for it, which takes longer
        # than an answer does; judge availability on the steady state only.
        self.first_timeout_s = first_timeout_s
        self._answered = False
        self._failed_open = 0
        self._last_warning = -WARN_EVERY_S

    async def admit(self, authorization: str | None) -> Admission:
        """The caller's key and the headers for its response; ApiError 401 or 429 otherwise."""
        key = self.keys.authenticate(authorization)
        if self.limiter is None or self.limit is None:
            return Admission(key, {})
        decision = await self._ask(key)
        if decision is None:
            return Admission(key, {"X-RateLimit-Limit": str(key.rate_limit or self.limit.requests)})
        if not decision.allowed:
            raise ApiError(
                429,
                f"Rate limited: {decision.limit} requests per {self.limit.window_s:g} s per API "
                f"key; retry in {decision.retry_after_s} s, or use a dedicated endpoint",
                decision.headers(),
            )
        return Admission(key, decision.headers())

    async def _ask(self, key: KeyRecord) -> Decision | None:
        """The limiter's decision, or None when it cannot give one in time (fail open)."""
        assert self.limiter is not None
        timeout = self.timeout_s if self._answered else self.first_timeout_s
        started = time.perf_counter()
        try:
            response = self.limiter.acquire.remote(key.id, key.rate_limit)
            # On timeout wait_for cancels the await, which withdraws the call without blocking
            # (DeploymentResponse.cancel() can block the event loop until assignment).
            decision = await asyncio.wait_for(_result(response), timeout)
        except Exception as exc:  # any failure of the limiter, not of the request: fail open
            self._warn(exc)
            return None
        if not self._answered:
            logger.info(
                "rate limiter first answered in %.0f ms", (time.perf_counter() - started) * 1e3
            )
            self._answered = True
        return decision

    def _warn(self, exc: Exception) -> None:
        self._failed_open += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            logger.warning(
                "rate limiter unavailable (%s): admitted %d request(s) uncounted (fail open)",
                type(exc).__name__,
                self._failed_open,
            )
            self._last_warning = now
            self._failed_open = 0


# The route's admission headers travel in the request scope, so the exception handlers can put
# them on error responses too (they get a fresh Request over the same scope).
_STATE_KEY = "rate_limit_headers"


def attach_limit_headers(request: Request, headers: dict[str, str]) -> None:
    setattr(request.state, _STATE_KEY, headers)


def limit_headers(request: Request) -> dict[str, str]:
    return dict(getattr(request.state, _STATE_KEY, {}))

"""Sliding-window rate limiting arithmetic: plain Python, no Ray, no clock of its own.

A key may make `limit` requests in any rolling `window_s` seconds. Each key keeps the times of
its admitted requests (a sliding log, at most `limit` entries), so the count is exact rather than
the usual two-bucket approximation. Rejected requests are not counted: a client that keeps
retrying too early is still admitted as soon as its oldest request leaves the window.

Header meanings (all whole seconds, rounded up so that waiting that long is always enough):
- `X-RateLimit-Limit`: requests allowed per window for this key;
- `X-RateLimit-Remaining`: requests still allowed right now, after this one;
- `X-RateLimit-Reset`: seconds until the oldest counted request leaves the window, i.e. until
  `Remaining` next goes up (on a 429 this equals `Retry-After`).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RateLimit:
    requests: int
    window_s: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int  # 0 when allowed
    window_s: float = 60.0  # the window these counts are over, for the 429's message
    # Refused: the exact seconds until `cost` more fit (retry_after_s is this rounded up).
    wait_s: float = 0.0

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


@dataclass(frozen=True)
class Refused:
    """The limiter's last refusal of a key, good until `until` (its holder's clock).

    Rejected requests are not counted, so nothing can admit the key before then: whoever holds
    this may answer the key's next requests itself with `decision()` (the ingress replica, and
    the proxy's edge once told, deployments/edge.py).
    """

    until: float
    refusal: Decision

    def decision(self, limit: int, now: float) -> Decision | None:
        """The refusal as of `now`, or None once it has run out (or the key's limit changed)."""
        left = self.until - now
        if left <= 0 or limit != self.refusal.limit:
            return None
        wait = max(1, math.ceil(left))
        return replace(self.refusal, reset_s=wait, retry_after_s=wait, wait_s=left)


def refusal_message(decision: Decision, cost: int = 1) -> str:
    """The 429's message for a refusal of `cost` requests."""
    rate = f"{decision.limit} requests per {decision.window_s:g} s per API key"
    if cost > decision.limit:
        return (
            f"Rate limited: {cost} images count as {cost} requests, over this key's {rate}; "
            "send fewer images per request, or use a dedicated endpoint"
        )
    what = f"{cost} images count as {cost} requests; " if cost > 1 else ""
    return (
        f"Rate limited: {what}{rate}; retry in {decision.retry_after_s} s, "
        "or use a dedicated endpoint"
    )


def shard_of(key_id: str, shards: int) -> int:
    """The limiter shard that counts `key_id`: the same in every process and every run (Python's
    own `hash` of a str is salted per process, so two ingress replicas would disagree)."""
    digest = hashlib.blake2b(key_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _whole_seconds(s: float) -> int:
    # Never 0 while something is still counted: "retry in 0 s" would invite a rejected retry.
    return max(1, math.ceil(s))


class SlidingWindow:
    """Per-key sliding logs. Not thread-safe: one owner (the limiter replica) calls it."""

    def __init__(self, config: RateLimit):
        self.config = config
        self._log: dict[str, deque[float]] = {}
        self._last_prune = -math.inf

    def __len__(self) -> int:
        return len(self._log)

    def acquire(self, key: str, now: float, limit: int | None = None, cost: int = 1) -> Decision:
        """Admit and count `cost` requests of `key` at time `now` (all or none), or say how
        long to wait.

        `limit` overrides the configured requests per window for this key (None: the default).
        A cost over the limit never fits: refused with a whole window to wait.
        """
        limit = limit or self.config.requests
        window = self.config.window_s
        self._maybe_prune(now)
        log = self._log.setdefault(key, deque())
        while log and log[0] <= now - window:
            log.popleft()
        if len(log) + cost <= limit:
            log.extend([now] * cost)
            reset = _whole_seconds(log[0] + window - now)
            return Decision(True, limit, limit - len(log), reset, 0, window)
        remaining = max(0, limit - len(log))
        if cost > limit:
            wait = _whole_seconds(window)
            return Decision(False, limit, remaining, wait, wait, window)
        # With n counted, `cost` more fit once the (n + cost - limit) oldest have expired.
        # n > limit only happens after a key's limit was lowered while it had traffic.
        exact = log[len(log) + cost - limit - 1] + window - now
        wait = _whole_seconds(exact)
        return Decision(False, limit, remaining, wait, wait, window, exact)

    def top_up(self, key: str, now: float, limit: int | None, held: int, cost: int) -> Decision:
        """Turn the `held` requests `key` counted last into `cost`: all of them or, refused,
        none (the held ones are given back)."""
        log = self._log.get(key, deque())
        for _ in range(min(held, len(log))):
            log.pop()
        return self.acquire(key, now, limit, cost)

    def _maybe_prune(self, now: float) -> None:
        """Forget keys idle for a whole window, at most once per window (amortised O(1))."""
        if now - self._last_prune < self.config.window_s:
            return
        self._last_prune = now
        horizon = now - self.config.window_s
        for key in [k for k, log in self._log.items() if not log or log[-1] <= horizon]:
            del self._log[key]

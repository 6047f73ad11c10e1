"""A pace: events at most `per_s` a second, each told how long to wait for its turn.

The proxy's edge (deployments/edge.py) paces the rejections it repeats from holds. Each costs
little (well under a millisecond of the proxy's CPU; bench/README.md), but a client that
hammers a spent key gets its next answer as soon as it asks, so a closed loop of them takes as
much of the proxy, the process every admitted request also passes through, as the machine's
scheduler gives it. Paced, a flood of rejections takes at most `per_s` times that, whatever its
concurrency, and an answer that needs no wait (anyone not flooding) is sent at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Pace:
    per_s: float  # 0 or less: no pace, never a wait
    max_wait_s: float = 1.0  # the longest anyone waits: past that backlog the pace gives way
    _next: float = 0.0  # the earliest time the next event may go

    def wait(self, now: float) -> float:
        """Seconds from `now` until this event's turn (0: at once); the turn is then taken."""
        if self.per_s <= 0:
            return 0.0
        turn = min(max(self._next, now), now + self.max_wait_s)
        self._next = turn + 1.0 / self.per_s
        return turn - now

"""Where one request's time went, as a `Server-Timing` header.

Browsers' developer tools chart the header; the benchmark reads it back (bench/server_timing.py)
to split a request's latency between the upload, the decode, the trip to the model replica and
the model's own work.
"""

from __future__ import annotations

import time


class PhaseTimer:
    """Consecutive phases of one request, each timed from the end of the one before."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._last = self.started
        self.phases: dict[str, float] = {}  # name -> seconds, in order

    def mark(self, name: str) -> float:
        """End the phase `name` now; returns its seconds."""
        now = time.perf_counter()
        self.phases[name] = now - self._last
        self._last = now
        return self.phases[name]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def header(self, **extra_ms: float) -> str:
        """`name;dur=ms` per phase, then `extra_ms` (times measured elsewhere), then `total`."""
        entries = {name: seconds * 1000 for name, seconds in self.phases.items()}
        entries.update(extra_ms)
        entries["total"] = self.elapsed() * 1000
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in entries.items())

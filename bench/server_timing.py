"""Reading a `Server-Timing` header back (shared/timing.py writes it) into per-phase times."""

from __future__ import annotations

import contextlib


def parse_server_timing(header: str) -> dict[str, float]:
    """`a;dur=1.5, b;dur=2` -> {"a": 1.5, "b": 2.0}; entries without a duration are skipped."""
    out: dict[str, float] = {}
    for entry in header.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key == "dur" and name:
                with contextlib.suppress(ValueError):  # a malformed entry is not worth failing
                    out[name] = float(value)
    return out

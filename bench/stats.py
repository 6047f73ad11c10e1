"""Pure numbers for the benchmark: percentiles, one level's summary, medians over runs, targets.

No I/O and no timing here, so every rule that turns raw samples into a reported figure is
unit-tested (tests/unit/test_bench.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

PERCENTILES = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's default).

    Interpolation, not nearest rank: with a few hundred samples per level, p99 then moves smoothly
    instead of jumping to whichever single request happened to be slowest.
    """
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_level(
    latencies_s: Sequence[float], wall_s: float, errors: int = 0
) -> dict[str, float | int]:
    """One concurrency level of one run: throughput and latency percentiles in milliseconds."""
    if wall_s <= 0:
        raise ValueError("wall time must be positive")
    summary: dict[str, float | int] = {
        "requests": len(latencies_s),
        "errors": errors,
        "images_per_s": len(latencies_s) / wall_s,
        "mean_ms": statistics.fmean(latencies_s) * 1000 if latencies_s else math.nan,
    }
    for q in PERCENTILES:
        summary[f"p{q}_ms"] = percentile(latencies_s, q) * 1000
    return summary


def median_of_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Field-wise median of numeric fields across repeated runs of the same level.

    Each figure's median is taken on its own (the run with the median throughput need not be
    the one with the median p99); `runs` keeps the count. Integer counters are summed instead.
    """
    if not runs:
        raise ValueError("no runs to combine")
    combined: dict[str, Any] = {"runs": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        if all(isinstance(v, bool) for v in values) or not all(
            isinstance(v, int | float) for v in values
        ):
            combined[key] = values[0]
        elif key in ("requests", "errors"):
            combined[key] = sum(values)
        else:
            finite = [float(v) for v in values if not math.isnan(float(v))]
            combined[key] = statistics.median(finite) if finite else math.nan
    return combined


def saturated_throughput(levels: dict[int, dict[str, Any]]) -> tuple[int, float]:
    """(concurrency, images/s) of the level with the highest throughput."""
    if not levels:
        raise ValueError("no levels")
    best = max(levels, key=lambda c: levels[c]["images_per_s"])
    return best, float(levels[best]["images_per_s"])


def evaluate_targets(
    results: dict[str, dict[int, dict[str, Any]]],
    *,
    raw: str = "raw",
    plain: str = "plain",
    ours: str = "dedicated",
    at_concurrency: int = 8,
) -> list[dict[str, Any]]:
    """The issue's three targets as rows: name, measured value, bound, and whether it holds.

    `results` maps target name -> concurrency -> the median summary. Raw in-process is measured
    as one stream (concurrency 1): its throughput is the floor's saturated rate.
    """
    rows: list[dict[str, Any]] = []
    if raw in results and ours in results:
        _, raw_rate = saturated_throughput(results[raw])
        level, our_rate = saturated_throughput(results[ours])
        ratio = our_rate / raw_rate
        rows.append(
            {
                "target": f"{ours} saturated throughput / {raw}",
                "value": ratio,
                "bound": ">= 0.90",
                "met": ratio >= 0.90,
                "detail": f"{our_rate:.2f} img/s at c={level} vs {raw_rate:.2f} img/s",
            }
        )
        raw_p50 = float(results[raw][min(results[raw])]["p50_ms"])
        our_p50 = float(results[ours][1]["p50_ms"]) if 1 in results[ours] else math.nan
        rows.append(
            {
                "target": f"{ours} p50 at c=1 - {raw} p50",
                "value": our_p50 - raw_p50,
                "bound": "<= 6 ms",
                "met": our_p50 - raw_p50 <= 6.0,
                "detail": f"{our_p50:.1f} ms vs {raw_p50:.1f} ms",
            }
        )
    if plain in results and ours in results:
        theirs = results[plain].get(at_concurrency)
        mine = results[ours].get(at_concurrency)
        if theirs and mine:
            ratio = mine["images_per_s"] / theirs["images_per_s"]
            lower_p99 = mine["p99_ms"] < theirs["p99_ms"]
            rows.append(
                {
                    "target": f"{ours} / {plain} throughput at c={at_concurrency}, lower p99",
                    "value": ratio,
                    "bound": ">= 1.5 and lower p99",
                    "met": ratio >= 1.5 and lower_p99,
                    "detail": (
                        f"{mine['images_per_s']:.2f} vs {theirs['images_per_s']:.2f} img/s; "
                        f"p99 {mine['p99_ms']:.0f} vs {theirs['p99_ms']:.0f} ms"
                    ),
                }
            )
    return rows


def markdown_table(
    results: dict[str, dict[int, dict[str, Any]]], columns: Iterable[tuple[str, str, str]]
) -> str:
    """Rows of target x concurrency; `columns` are (header, field, format spec)."""
    columns = list(columns)
    header = "| target | c | " + " | ".join(h for h, _, _ in columns) + " |"
    rule = "|---|---:|" + "---:|" * len(columns)
    lines = [header, rule]
    for name, levels in results.items():
        for concurrency in sorted(levels):
            row = levels[concurrency]
            cells = [_cell(row.get(field), spec) for _, field, spec in columns]
            lines.append(f"| {name} | {concurrency} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def summarize_parallel(parts: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """Side-by-side closed loops (one per process) as one level: images/s is the sum of each
    process's own rate, latency percentiles are over every image (each one process's latency).

    `parts` are each process's {"latencies_s": [...], "wall_s": seconds}.
    """
    if not parts:
        raise ValueError("no parts")
    latencies = [t for part in parts for t in part["latencies_s"]]
    longest = max(float(part["wall_s"]) for part in parts)
    summary = summarize_level(latencies, longest)
    summary["images_per_s"] = sum(len(p["latencies_s"]) / float(p["wall_s"]) for p in parts)
    summary["streams"] = len(parts)
    return summary


def floor_ratios(
    results: dict[str, dict[int, dict[str, Any]]],
    *,
    floor: str = "floor",
    routes: Sequence[str] = ("shared", "dedicated"),
) -> dict[str, dict[str, Any]]:
    """served/floor throughput for each route at each concurrency, and at the route's best level.

    `results` maps target -> concurrency -> median summary; the floor is one level (its process
    count). Routes or a floor that were not measured are left out.
    """
    if floor not in results or not results[floor]:
        return {}
    floor_rate = float(next(iter(results[floor].values()))["images_per_s"])
    out: dict[str, dict[str, Any]] = {}
    for route in routes:
        levels = results.get(route)
        if not levels or floor_rate <= 0:
            continue
        best, best_rate = saturated_throughput(levels)
        out[route] = {
            "floor_images_per_s": floor_rate,
            "levels": {c: float(levels[c]["images_per_s"]) / floor_rate for c in sorted(levels)},
            "best": {
                "concurrency": best,
                "images_per_s": best_rate,
                "ratio": best_rate / floor_rate,
            },
        }
    return out

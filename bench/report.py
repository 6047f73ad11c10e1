"""The benchmark's outputs: results.json, results.md (tables and targets) and results.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.stats import evaluate_targets, markdown_table

COLUMNS = (
    ("img/s", "images_per_s", ".2f"),
    ("p50 ms", "p50_ms", ".1f"),
    ("p95 ms", "p95_ms", ".1f"),
    ("p99 ms", "p99_ms", ".1f"),
    ("server CPU (cores)", "cpu_cores", ".2f"),
    ("client CPU (cores)", "client_cpu_cores", ".2f"),
    ("peak RSS MB", "peak_rss_mb", ".0f"),
    ("peak PSS MB", "peak_pss_mb", ".0f"),
    ("errors", "errors", "d"),
)


def write_all(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "results.json",
        "md": out_dir / "results.md",
        "png": out_dir / "results.png",
    }
    paths["json"].write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    paths["md"].write_text(markdown(report))
    plot(report["median"], paths["png"], report.get("title", "YOLO Endpoints benchmark"))
    return paths


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


def markdown(report: dict[str, Any]) -> str:
    median = report["median"]
    lines = [f"# {report.get('title', 'Benchmark')}", ""]
    if not report.get("quiet", True):
        lines += [
            "**Not a clean measurement: the machine was busy (other processes or Ray clusters "
            "running; see the notes). Ratios between targets are indicative at best.**",
            "",
        ]
    lines += [f"- {k}: {v}" for k, v in report.get("setup", {}).items()]
    lines += ["", f"Median of {report['repeats']} run(s) per level.", ""]
    lines.append(markdown_table(median, COLUMNS))
    targets = report.get("targets") or evaluate_targets(median)
    if targets:
        lines += ["", "## Targets", "", "| target | value | bound | met | detail |"]
        lines.append("|---|---:|---|---|---|")
        for row in targets:
            met = "yes" if row["met"] else "**no**"
            lines.append(
                f"| {row['target']} | {row['value']:.3f} | {row['bound']} | {met} "
                f"| {row['detail']} |"
            )
    lines += floor_table(report.get("served/floor") or {}, median)
    sections = (
        ("Large photos", "large photos"),
        ("Notes", "notes"),
        ("Detections check", "agreement"),
    )
    for title, key in sections:
        if report.get(key):
            lines += ["", f"## {title}", ""]
            lines += [f"- {k}: {v}" for k, v in report[key].items()]
    return "\n".join(lines) + "\n"


def floor_table(ratios: dict[str, dict[str, Any]], median: dict[str, Any]) -> list[str]:
    """served/floor throughput per route and level, as markdown lines (none without a floor)."""
    if not ratios:
        return []
    floor = next(iter(median.get("floor", {}).items()), None)
    levels = sorted({int(c) for row in ratios.values() for c in row["levels"]})
    lines = ["", "## Served / floor", ""]
    if floor:
        streams, row = floor
        lines += [
            f"Floor: {row['images_per_s']:.2f} img/s from {streams} processes, p50 "
            f"{row['p50_ms']:.1f} ms per image (no serving; bench/floor.py).",
            "",
        ]
    lines.append("| route | " + " | ".join(f"c={c}" for c in levels) + " | best |")
    lines.append("|---|" + "---:|" * (len(levels) + 1))
    for route, row in ratios.items():
        by_level = {int(c): v for c, v in row["levels"].items()}
        cells = [f"{by_level[c]:.2f}" if c in by_level else "-" for c in levels]
        best = row["best"]
        cells.append(
            f"{best['ratio']:.2f} (c={best['concurrency']}, {best['images_per_s']:.2f} img/s)"
        )
        lines.append(f"| {route} | " + " | ".join(cells) + " |")
    return lines


def plot(results: dict[str, dict[int, dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here
    import matplotlib.pyplot as plt

    fig, (rate_ax, p99_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    reference_styles = iter(["--", ":", "-."] * 4)
    all_levels = sorted({c for levels in results.values() for c in levels})
    for name, levels in results.items():
        xs = sorted(levels)
        rates = [levels[c]["images_per_s"] for c in xs]
        p99s = [levels[c]["p99_ms"] for c in xs]
        if len(xs) == 1:
            # A single stream (raw in-process): a reference line across the sweep.
            style = next(reference_styles)
            for ax, value in ((rate_ax, rates[0]), (p99_ax, p99s[0])):
                ax.axhline(value, linestyle=style, color="grey", label=f"{name} (1 stream)")
            continue
        rate_ax.plot(xs, rates, marker="o", label=name)
        p99_ax.plot(xs, [v if not math.isnan(v) else None for v in p99s], marker="o", label=name)
    for ax, ylabel in ((rate_ax, "images/s"), (p99_ax, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_levels, [str(c) for c in all_levels])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    p99_ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""The benchmark's arithmetic: percentiles, level summaries, medians over runs, the targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.load import Upload
from bench.stats import (
    evaluate_targets,
    floor_ratios,
    markdown_table,
    median_of_runs,
    percentile,
    saturated_throughput,
    summarize_level,
    summarize_parallel,
)


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 1.5, 0.05, 0.33]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_level_rates_and_milliseconds() -> None:
    summary = summarize_level([0.1, 0.2, 0.3, 0.4], wall_s=2.0, errors=1)
    assert summary["requests"] == 4
    assert summary["errors"] == 1
    assert summary["images_per_s"] == pytest.approx(2.0)
    assert summary["p50_ms"] == pytest.approx(250.0)
    assert summary["mean_ms"] == pytest.approx(250.0)
    with pytest.raises(ValueError):
        summarize_level([0.1], wall_s=0)


def test_median_of_runs_takes_each_field_on_its_own_and_sums_counts() -> None:
    runs = [
        {"images_per_s": 10.0, "p99_ms": 300.0, "requests": 80, "errors": 0, "note": "a"},
        {"images_per_s": 12.0, "p99_ms": 100.0, "requests": 96, "errors": 1, "note": "b"},
        {"images_per_s": 11.0, "p99_ms": 200.0, "requests": 88, "errors": 0, "note": "c"},
    ]
    combined = median_of_runs(runs)
    assert combined["images_per_s"] == 11.0
    assert combined["p99_ms"] == 200.0
    assert combined["requests"] == 264
    assert combined["errors"] == 1
    assert combined["runs"] == 3
    assert combined["note"] == "a"
    with pytest.raises(ValueError):
        median_of_runs([])


def level(rate: float, p50: float = 50.0, p99: float = 90.0) -> dict:
    return {"images_per_s": rate, "p50_ms": p50, "p99_ms": p99}


def test_saturated_throughput_is_the_best_level() -> None:
    assert saturated_throughput({1: level(10), 4: level(19), 16: level(18)}) == (4, 19.0)


def test_targets_met_and_missed() -> None:
    results = {
        "raw": {1: level(20.0, p50=50.0)},
        "plain": {8: level(10.0, p99=900.0)},
        "dedicated": {1: level(17.0, p50=55.0), 8: level(19.0, p99=450.0)},
    }
    by_bound = {row["bound"]: row for row in evaluate_targets(results)}
    assert by_bound[">= 0.90"]["value"] == pytest.approx(0.95)
    assert by_bound[">= 0.90"]["met"]
    assert by_bound["<= 6 ms"]["value"] == pytest.approx(5.0)
    assert by_bound["<= 6 ms"]["met"]
    assert by_bound[">= 1.5 and lower p99"]["value"] == pytest.approx(1.9)
    assert by_bound[">= 1.5 and lower p99"]["met"]

    results["dedicated"][8] = level(16.0, p99=950.0)  # faster than plain, but a worse p99
    results["dedicated"][1] = level(17.0, p50=57.0)
    by_bound = {row["bound"]: row for row in evaluate_targets(results)}
    assert not by_bound[">= 0.90"]["met"]  # 17 / 20
    assert not by_bound["<= 6 ms"]["met"]
    assert not by_bound[">= 1.5 and lower p99"]["met"]


def test_targets_skip_what_was_not_measured() -> None:
    assert evaluate_targets({"dedicated": {1: level(10)}}) == []


def test_markdown_table_rows_per_level() -> None:
    table = markdown_table(
        {"plain": {2: level(5.0), 1: level(4.0)}},
        [("img/s", "images_per_s", ".1f"), ("p50", "p50_ms", ".0f"), ("x", "missing", ".1f")],
    )
    lines = table.splitlines()
    assert lines[0] == "| target | c | img/s | p50 | x |"
    assert lines[2] == "| plain | 1 | 4.0 | 50 | - |"
    assert lines[3] == "| plain | 2 | 5.0 | 50 | - |"


def test_upload_is_a_well_formed_multipart_body() -> None:
    from email.parser import BytesParser
    from email.policy import HTTP

    upload = Upload.build("bus.jpg", b"\xff\xd8jpeg-bytes", {"conf": "0.25", "imgsz": "640"})
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {upload.content_type}\r\n\r\n".encode() + upload.body
    )
    parts = {p.get_param("name", header="content-disposition"): p for p in message.iter_parts()}
    assert parts["conf"].get_content() == "0.25"
    assert parts["imgsz"].get_content() == "640"
    assert parts["file"].get_filename() == "bus.jpg"
    assert parts["file"].get_payload(decode=True) == b"\xff\xd8jpeg-bytes"


def test_summarize_parallel_sums_each_process_rate_and_pools_latencies() -> None:
    parts = [
        {"latencies_s": [0.1] * 20, "wall_s": 2.0},  # 10 img/s
        {"latencies_s": [0.2] * 12, "wall_s": 2.4},  # 5 img/s
    ]
    summary = summarize_parallel(parts)
    assert summary["images_per_s"] == pytest.approx(15.0)
    assert summary["requests"] == 32
    assert summary["streams"] == 2
    assert summary["p50_ms"] == pytest.approx(100.0)
    assert summary["p99_ms"] == pytest.approx(200.0)
    with pytest.raises(ValueError):
        summarize_parallel([])


def test_floor_ratios_per_level_and_best() -> None:
    results = {
        "floor": {2: level(20.0)},
        "dedicated": {1: level(10.0), 8: level(18.0), 16: level(17.0)},
        "shared": {1: level(5.0)},
    }
    ratios = floor_ratios(results)
    assert ratios["dedicated"]["levels"] == {1: 0.5, 8: 0.9, 16: 0.85}
    assert ratios["dedicated"]["best"] == {"concurrency": 8, "images_per_s": 18.0, "ratio": 0.9}
    assert ratios["shared"]["levels"] == {1: 0.25}
    assert ratios["dedicated"]["floor_images_per_s"] == 20.0
    assert floor_ratios({"dedicated": {1: level(10.0)}}) == {}
    assert list(floor_ratios({"floor": {2: level(20.0)}})) == []


def test_floor_table_and_rejection_ratio() -> None:
    from bench.rejections import flood_ratio
    from bench.report import floor_table

    median = {"floor": {2: level(20.0, p50=95.0)}, "dedicated": {1: level(10.0), 4: level(16.0)}}
    lines = floor_table(floor_ratios(median), median)
    assert "Floor: 20.00 img/s from 2 processes, p50 95.0 ms" in lines[3]
    assert lines[-1] == "| dedicated | 0.50 | 0.80 | 0.80 (c=4, 16.00 img/s) |"
    assert floor_table({}, median) == []
    assert flood_ratio([10.0, 12.0], 5.5) == pytest.approx(0.5)
    assert math.isnan(flood_ratio([0.0], 1.0))

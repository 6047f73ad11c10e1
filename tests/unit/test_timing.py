import time

from bench.server_timing import parse_server_timing
from shared.timing import PhaseTimer


def test_phases_are_consecutive_and_the_header_round_trips() -> None:
    timer = PhaseTimer()
    time.sleep(0.01)
    first = timer.mark("upload")
    time.sleep(0.02)
    second = timer.mark("decode")
    assert first >= 0.01 and second >= 0.02  # sleep() waits at least that long
    parsed = parse_server_timing(timer.header(inference=12.345))
    assert list(parsed) == ["upload", "decode", "inference", "total"]
    assert parsed["inference"] == 12.3
    # Each entry is rounded to 0.1 ms on its own.
    assert parsed["total"] >= parsed["upload"] + parsed["decode"] - 0.1


def test_parse_skips_entries_without_a_duration() -> None:
    assert parse_server_timing('miss, db;dur=53, app;desc="x";dur=47.2, bad;dur=x') == {
        "db": 53.0,
        "app": 47.2,
    }

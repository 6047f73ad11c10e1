"""bench/soak.py's verdict: unexpected answers, dead processes and RSS growth fail the soak."""

from __future__ import annotations

import subprocess

import psutil
import pytest

from bench.soak import MB, Tally, compare, serve_processes, verdict

START = {10: ("ray::ServeReplica:a:Model", 1000 * MB), 11: ("ray::ProxyActor", 200 * MB)}


def test_growth_is_per_process_and_new_processes_are_listed() -> None:
    end = {10: ("ray::ServeReplica:a:Model", 1050 * MB), 12: ("ray::ServeReplica:a:Model", MB)}
    rows, new = compare(START, end)
    by_pid = {r.pid: r for r in rows}
    assert by_pid[10].growth == pytest.approx(0.05)
    assert by_pid[11].end_mb is None and by_pid[11].growth is None
    assert new == [(12, "ray::ServeReplica:a:Model")]


def test_verdict() -> None:
    tally = Tally()
    for _ in range(3):
        tally.record("200", 0.1)
    grown, _ = compare(START, {10: (START[10][0], 1101 * MB), 11: START[11]})
    steady, _ = compare(START, {10: (START[10][0], 1099 * MB), 11: START[11]})
    assert verdict(tally, steady, 0.10) == (True, [])
    ok, reasons = verdict(tally, grown, 0.10)
    assert not ok and "grew 10.1%" in reasons[0]
    died, _ = compare(START, {10: START[10]})
    assert "died" in verdict(tally, died, 0.10)[1][0]
    tally.record("503", 0.01, "busy")
    tally.record("ClientOSError", 0.01)
    ok, reasons = verdict(tally, steady, 0.10)
    assert not ok and tally.unexpected == 2 and "2 unexpected" in reasons[0]
    assert tally.first_unexpected[0] == "503: busy" and len(tally.latencies_s) == 3


def test_only_serve_processes_are_counted() -> None:
    # A process with nothing of Ray's under it has no Serve processes. (Not this test process:
    # in a full run the session's Ray cluster is a child of pytest.)
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert serve_processes(psutil.Process(child.pid)) == {}
    finally:
        child.kill()
        child.wait()

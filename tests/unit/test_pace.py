"""shared/pace.py: turns a pace apart, at once when nobody waits, a backlog bounded."""

from __future__ import annotations

import pytest

from shared.pace import Pace


def test_events_alone_go_at_once() -> None:
    pace = Pace(per_s=10)
    assert [pace.wait(t) for t in (100.0, 100.1, 100.25, 200.0)] == [0, 0, 0, 0]


def test_a_burst_is_spread_at_the_pace() -> None:
    pace = Pace(per_s=100)
    waits = [pace.wait(5.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.01, 0.02, 0.03])
    # Half the backlog's time later, a new event waits behind what is left of it.
    assert pace.wait(5.02) == pytest.approx(0.02)


def test_no_wait_is_longer_than_the_most_a_backlog_may_hold() -> None:
    pace = Pace(per_s=10, max_wait_s=0.5)
    waits = [pace.wait(0.0) for _ in range(20)]
    assert max(waits) == pytest.approx(0.5)
    assert waits[:6] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])


def test_no_pace_never_waits() -> None:
    pace = Pace(per_s=0)
    assert {pace.wait(1.0) for _ in range(100)} == {0.0}

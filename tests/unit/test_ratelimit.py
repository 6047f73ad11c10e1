"""The sliding-window arithmetic, on a fake clock: exact counts, rolling, Retry-After."""

from __future__ import annotations

from shared.ratelimit import RateLimit, SlidingWindow


def fill(
    window: SlidingWindow, key: str, n: int, now: float = 0.0, limit: int | None = None
) -> list[bool]:
    return [window.acquire(key, now, limit).allowed for _ in range(n)]


def test_exactly_limit_requests_pass_in_one_window() -> None:
    window = SlidingWindow(RateLimit(20, 60))
    assert fill(window, "a", 25) == [True] * 20 + [False] * 5


def test_remaining_counts_down_and_rejections_are_not_counted() -> None:
    window = SlidingWindow(RateLimit(3, 60))
    remaining = [window.acquire("a", float(t)).remaining for t in range(3)]
    assert remaining == [2, 1, 0]
    for t in range(3, 10):
        assert not window.acquire("a", float(t)).allowed
    # Only the three admitted requests count: the first leaves the window at t=60.
    assert window.acquire("a", 60.0).allowed


def test_retry_after_is_whole_seconds_until_the_oldest_expires() -> None:
    window = SlidingWindow(RateLimit(2, 60))
    window.acquire("a", 10.0)
    window.acquire("a", 30.0)
    rejected = window.acquire("a", 40.5)
    assert not rejected.allowed
    assert rejected.retry_after_s == 30  # 10 + 60 - 40.5 = 29.5, rounded up
    assert rejected.reset_s == rejected.retry_after_s
    assert rejected.headers()["Retry-After"] == "30"
    assert rejected.headers()["X-RateLimit-Remaining"] == "0"
    # Waiting exactly Retry-After is enough.
    assert window.acquire("a", 40.5 + rejected.retry_after_s).allowed


def test_retry_after_is_never_zero() -> None:
    window = SlidingWindow(RateLimit(1, 10))
    window.acquire("a", 0.0)
    assert window.acquire("a", 9.9999).retry_after_s == 1


def test_window_rolls_one_request_at_a_time() -> None:
    window = SlidingWindow(RateLimit(2, 10))
    assert window.acquire("a", 0.0).allowed
    assert window.acquire("a", 5.0).allowed
    assert not window.acquire("a", 9.0).allowed
    assert window.acquire("a", 10.0).allowed  # t=0 left the window
    assert not window.acquire("a", 14.0).allowed  # t=5 has not
    assert window.acquire("a", 15.0).allowed


def test_allowed_decision_headers() -> None:
    window = SlidingWindow(RateLimit(5, 60))
    window.acquire("a", 0.0)
    decision = window.acquire("a", 20.0)
    assert decision.headers() == {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "3",
        "X-RateLimit-Reset": "40",  # the t=0 request leaves at t=60
    }


def test_keys_are_independent() -> None:
    window = SlidingWindow(RateLimit(20, 60))
    assert fill(window, "a", 21) == [True] * 20 + [False]
    assert fill(window, "b", 20) == [True] * 20


def test_per_key_limit_override() -> None:
    window = SlidingWindow(RateLimit(2, 60))
    assert fill(window, "big", 10, limit=100) == [True] * 10
    high = window.acquire("big", 1.0, limit=100)
    assert high.limit == 100 and high.remaining == 89
    assert fill(window, "default", 3) == [True, True, False]


def test_lowered_limit_waits_for_enough_expiries() -> None:
    window = SlidingWindow(RateLimit(2, 60))
    for t in range(5):
        window.acquire("a", float(t), limit=10)
    # Five counted, limit now 2: four must leave (t=0..3, the last at t=63) before one fits.
    rejected = window.acquire("a", 10.0)
    assert rejected.retry_after_s == 53
    assert not window.acquire("a", 62.5).allowed
    assert window.acquire("a", 63.0).allowed


def test_idle_keys_are_forgotten() -> None:
    window = SlidingWindow(RateLimit(1, 10))
    for i in range(100):
        window.acquire(f"k{i}", 0.0)
    assert len(window) == 100
    window.acquire("late", 25.0)
    assert len(window) == 1
    assert window.acquire("k0", 25.0).allowed


def test_a_cost_counts_whole_or_not_at_all() -> None:
    window = SlidingWindow(RateLimit(5, 60))
    assert window.acquire("a", 0.0, cost=3).remaining == 2
    refused = window.acquire("a", 1.0, cost=3)
    assert not refused.allowed and refused.remaining == 2  # nothing counted: 2 still free
    assert window.acquire("a", 2.0, cost=2).remaining == 0
    # Three more fit once the three counted at t=0 have left the window.
    assert not window.acquire("a", 59.0, cost=3).allowed
    assert window.acquire("a", 60.0, cost=3).allowed


def test_retry_after_for_a_cost_waits_for_enough_room() -> None:
    window = SlidingWindow(RateLimit(4, 60))
    for t in (0.0, 10.0, 20.0, 30.0):
        window.acquire("a", t)
    refused = window.acquire("a", 40.0, cost=2)
    # Two must leave: the second oldest (t=10) leaves at 70.
    assert refused.retry_after_s == 30
    assert window.acquire("a", 40.0 + refused.retry_after_s, cost=2).allowed


def test_a_cost_over_the_limit_never_fits() -> None:
    window = SlidingWindow(RateLimit(3, 60))
    refused = window.acquire("a", 0.0, cost=4)
    assert not refused.allowed and refused.remaining == 3 and refused.retry_after_s == 60
    assert window.acquire("a", 0.0, cost=3).allowed


def test_top_up_turns_the_held_count_into_the_cost_or_gives_it_back() -> None:
    window = SlidingWindow(RateLimit(5, 60))
    window.acquire("a", 0.0)  # the admission's count
    assert window.top_up("a", 0.0, None, held=1, cost=4).remaining == 1
    window.acquire("a", 1.0)  # the next request's admission: 5 counted
    refused = window.top_up("a", 1.0, None, held=1, cost=2)
    assert not refused.allowed
    # Refused: its admission was given back, so 4 stay counted and one request fits.
    assert window.acquire("a", 1.0).remaining == 0

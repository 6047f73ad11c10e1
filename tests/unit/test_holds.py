"""Held rejections (shared/holds.py): their header, what they are filed under, and their answers."""

from __future__ import annotations

import json

import pytest

from shared import holds
from shared.holds import HeldAnswers, Hold
from shared.ratelimit import Decision

REFUSAL = Decision(False, 20, 0, 37, 37, 60.0, 36.2)
HEADERS_429 = [
    (b"content-length", b"99"),
    (b"X-RateLimit-Limit", b"20"),
    (b"X-RateLimit-Remaining", b"0"),
    (b"X-RateLimit-Reset", b"37"),
    (b"Retry-After", b"37"),
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (holds.HOLD_HEADER, b"status=429;s=36.2"),
]
BODY_401 = holds.json_body("Unauthorized: invalid or revoked API key")
HEADERS_401 = [
    (b"www-authenticate", b"Bearer"),
    (b"content-length", b"%d" % len(BODY_401)),
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
]
KEY = holds.held_key(b"POST", "/api/models/yolo26n/predict?", b"Bearer ul_x", None)


def test_a_hold_goes_through_its_header_unchanged() -> None:
    for hold in (Hold(401, 0.5, "shared"), Hold(429, 36.2, "my app; x=1", REFUSAL)):
        decoded = holds.decode(holds.encode(hold))
        assert decoded is not None and decoded.status == hold.status
        assert decoded.seconds == pytest.approx(hold.seconds)
        assert decoded.application == hold.application
    decoded = holds.decode(holds.encode(Hold(429, 36.2, "a", REFUSAL)))
    assert decoded is not None and decoded.refusal is not None
    assert (decoded.refusal.limit, decoded.refusal.remaining) == (20, 0)
    assert decoded.refusal.window_s == 60.0 and not decoded.refusal.allowed


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage",
        b"status=401",
        b"status=401;s=0",
        b"status=401;s=-1",
        b"status=401;s=nan",
        b"status=401;s=1e9",
        b"status=404;s=1",
        b"status=429;s=1",  # a 429 without its refusal
        b"status=429;s=1;limit=0;remaining=0;window=60",
        b"status=429;s=1;limit=2;remaining=0;window=0",
        b"status=401;s=1;app=\xff",
    ],
)
def test_a_malformed_hold_holds_nothing(value: bytes) -> None:
    assert holds.decode(value) is None


def test_answers_are_filed_under_everything_a_rejection_depends_on() -> None:
    base = (b"POST", "/api/models/a/predict?", b"Bearer k", None)
    others = [
        (b"GET", *base[1:]),
        (base[0], "/api/models/b/predict?", *base[2:]),
        (base[0], "/api/models/a/predict?conf=x", *base[2:]),
        (*base[:2], b"Bearer j", None),
        (*base[:2], None, None),
        (*base[:3], b"https://example.com"),
    ]
    keys = {holds.held_key(*base)} | {holds.held_key(*other) for other in others}
    assert len(keys) == len(others) + 1
    assert b"Bearer k" not in holds.held_key(*base)  # a digest, not the secret


def test_a_held_401_is_repeated_as_it_was_until_it_runs_out() -> None:
    held = HeldAnswers()
    assert held.hold(KEY, 100.0, Hold(401, 0.8, "shared"), 401, HEADERS_401, BODY_401)
    answer = held.answer(KEY, 100.5)
    assert answer is not None and answer.status == 401 and answer.body == BODY_401
    assert answer.application == "shared"
    assert sorted(answer.headers) == sorted((k.lower(), v) for k, v in HEADERS_401)
    assert held.answer(KEY, 100.8) is None
    # Ran out, and still filed so the edge can tell: until it is held again or forgotten.
    assert held.ran_out(KEY, 100.8) and not held.ran_out(b"other", 100.8)
    held.forget(KEY)
    assert not held.ran_out(KEY, 100.8) and len(held) == 0


def test_a_held_429_counts_down_as_the_ingress_does() -> None:
    held = HeldAnswers()
    assert held.hold(KEY, 100.0, Hold(429, 36.2, "shared", REFUSAL), 429, HEADERS_429, b"{}")
    answer = held.answer(KEY, 110.0)  # 26.2 s left
    assert answer is not None and answer.status == 429
    headers = dict(answer.headers)
    assert headers[b"retry-after"] == headers[b"x-ratelimit-reset"] == b"27"
    assert headers[b"x-ratelimit-limit"] == b"20" and headers[b"x-ratelimit-remaining"] == b"0"
    assert headers[b"content-length"] == b"%d" % len(answer.body)
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert holds.HOLD_HEADER not in headers
    assert len(answer.headers) == len(headers)  # nothing twice
    message = json.loads(answer.body)["error"]
    assert message == (
        "Rate limited: 20 requests per 60 s per API key; retry in 27 s, or use a dedicated endpoint"
    )
    assert held.answer(KEY, 136.2) is None


def test_an_answer_that_does_not_match_its_hold_is_not_held() -> None:
    held = HeldAnswers()
    assert not held.hold(KEY, 0.0, Hold(401, 1.0), 200, HEADERS_401, BODY_401)
    assert not held.hold(KEY, 0.0, Hold(429, 1.0), 429, HEADERS_429, b"{}")  # no refusal
    assert not held.hold(KEY, 0.0, Hold(401, 1.0, refusal=REFUSAL), 401, HEADERS_401, b"{}")
    big = b"x" * (holds.MAX_BODY + 1)
    assert not held.hold(KEY, 0.0, Hold(401, 1.0), 401, HEADERS_401, big)
    assert len(held) == 0


def test_the_table_is_bounded_and_makes_room_from_expired_answers() -> None:
    held = HeldAnswers(capacity=2)
    hold = Hold(401, 1.0)
    for i in range(2):
        assert held.hold(b"%d" % i, 0.0, hold, 401, HEADERS_401, BODY_401)
    assert not held.hold(b"late", 0.5, hold, 401, HEADERS_401, BODY_401)  # both still live
    assert held.hold(b"late", 1.5, hold, 401, HEADERS_401, BODY_401)  # both expired
    assert len(held) == 1

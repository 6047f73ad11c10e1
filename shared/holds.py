"""Rejections the HTTP edge may repeat by itself: plain Python, no Ray, no clock of its own.

A 401 or a 429 from the ingress often holds for a while: every request on the same route with
the same key would get it again. The ingress says so with a `Hold` in HOLD_HEADER (only to an
edge that asked, with EDGE_HEADER), and the edge (deployments/edge.py) answers that key on that
route itself until the hold runs out, without the round trip through Serve's router to an
ingress replica that a flood of rejections otherwise costs.

How long each holds, measured by the ingress when it answers:
- a 401 until its key ring next reads the key store (a key created since might be accepted
  then): what the ingress itself would answer until then;
- a 429 until the limiter's retry time. Rejected requests are not counted, so nothing can admit
  the key sooner; a refusal of several images at once is never held (one may still fit).
The edge counts a hold from when it received the request, which is before the ingress measured
it, so an edge's answer never outlasts the ingress's. A held 429's Retry-After, X-RateLimit-Reset
and "retry in N s" count down exactly as the ingress's own repeated answers do.

What the edge cannot see until a hold ends: a key revoked, or its limit changed, while its 429
is held (at most the limiter's window); a 401's hold ends within the key ring's refresh.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from shared.ratelimit import Decision, Refused, refusal_message

HOLD_HEADER = b"x-yolo-hold"  # ingress -> edge; the edge strips it, clients never see it
EDGE_HEADER = b"x-yolo-edge"  # edge -> ingress: "I honour holds"; dropped when a client sends it
MAX_HOLD_S = 3600.0  # a hold past this is malformed, not long
MAX_HELD = 10_000  # answers an edge keeps; expired ones go first, then no new ones
MAX_BODY = 4096  # bytes of a held answer's body; a longer one is not held

HeldStatus = Literal[401, 429]
# A held answer's headers the edge writes anew each time (a 429's count down).
RECOMPUTED = {
    b"content-length",
    b"retry-after",
    b"x-ratelimit-limit",
    b"x-ratelimit-remaining",
    b"x-ratelimit-reset",
}


@dataclass(frozen=True)
class Hold:
    """An answer every request with this key on this route gets for `seconds` more."""

    status: HeldStatus
    seconds: float
    application: str = ""  # the Serve app that answered, for the edge's metric
    refusal: Decision | None = None  # a 429's, re-rendered as its wait counts down


def encode(hold: Hold) -> bytes:
    fields = [f"status={hold.status}", f"s={hold.seconds:.6f}", f"app={quote(hold.application)}"]
    if hold.refusal is not None:
        r = hold.refusal
        fields += [f"limit={r.limit}", f"remaining={r.remaining}", f"window={r.window_s:g}"]
    return ";".join(fields).encode()


def decode(value: bytes) -> Hold | None:
    """The hold in a header value, or None for anything malformed (then nothing is held)."""
    try:
        fields = dict(part.split("=", 1) for part in value.decode("ascii").split(";"))
        status = int(fields["status"])
        seconds = float(fields["s"])
        if not 0 < seconds <= MAX_HOLD_S:
            return None
        application = unquote(fields.get("app", ""))
        if status == 401:
            return Hold(401, seconds, application)
        if status != 429:
            return None
        limit, remaining = int(fields["limit"]), int(fields["remaining"])
        window = float(fields["window"])
        if limit < 1 or remaining < 0 or not window > 0:
            return None
        refusal = Decision(False, limit, remaining, 1, 1, window)
        return Hold(429, seconds, application, refusal)
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def held_key(method: bytes, path: str, authorization: bytes | None, origin: bytes | None) -> bytes:
    """What a held answer is filed under: all the ingress's rejection depends on. The key's
    secret goes into a digest, never into the table."""
    h = hashlib.blake2b(digest_size=16)
    for part in (method, path.encode("utf-8", "surrogateescape"), authorization, origin):
        h.update(b"\x00" if part is None else b"\x01%d:" % len(part) + part)
    return h.digest()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    application: str


@dataclass(frozen=True)
class _Held:
    until: float  # the edge's clock
    status: HeldStatus
    headers: tuple[tuple[bytes, bytes], ...]  # as answered, less RECOMPUTED and HOLD_HEADER
    body: bytes
    application: str
    refused: Refused | None

    def answer(self, now: float) -> Answer | None:
        if now >= self.until:
            return None
        body = self.body
        headers = list(self.headers)
        if self.refused is not None:
            decision = self.refused.decision(self.refused.refusal.limit, now)
            if decision is None:
                return None
            body = json_body(refusal_message(decision))
            headers += [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]
        headers.append((b"content-length", b"%d" % len(body)))
        return Answer(self.status, headers, body, self.application)


def json_body(message: str) -> bytes:
    """`{"error": message}` byte for byte as the ingress's JSONResponse renders it."""
    return json.dumps(
        {"error": message}, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()


class HeldAnswers:
    """The answers one edge holds, by `held_key`. Bounded: when full, answers that ran out
    make room, and until one does nothing new is held."""

    def __init__(self, capacity: int = MAX_HELD) -> None:
        self.capacity = capacity
        self._held: dict[bytes, _Held] = {}
        # While full, when the first held answer runs out: no scan of the table before then.
        self._full_until = 0.0

    def __len__(self) -> int:
        return len(self._held)

    def answer(self, key: bytes, now: float) -> Answer | None:
        held = self._held.get(key)
        return None if held is None else held.answer(now)

    def ran_out(self, key: bytes, now: float) -> bool:
        """This key's answer was held and no longer is: it is being asked again (a run-out hold
        stays filed until `forget` or a new hold, so the edge can tell)."""
        held = self._held.get(key)
        return held is not None and now >= held.until

    def forget(self, key: bytes) -> None:
        self._held.pop(key, None)

    def hold(
        self,
        key: bytes,
        received_at: float,
        hold: Hold,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> bool:
        """File the answer the ingress gave a request received at `received_at`; False when it
        is not held (it does not match its hold, is too big, or the table is full)."""
        if status != hold.status or len(body) > MAX_BODY:
            return False
        if (hold.status == 429) != (hold.refusal is not None):
            return False
        until = received_at + hold.seconds
        if key not in self._held and len(self._held) >= self.capacity:
            if received_at < self._full_until:
                return False
            self._prune(received_at)
            if len(self._held) >= self.capacity:
                self._full_until = min(held.until for held in self._held.values())
                return False
        kept = tuple(
            (name.lower(), value)
            for name, value in headers
            if name.lower() not in RECOMPUTED and name.lower() != HOLD_HEADER
        )
        refused = Refused(until, hold.refusal) if hold.refusal is not None else None
        self._held[key] = _Held(until, hold.status, kept, body, hold.application, refused)
        return True

    def _prune(self, now: float) -> None:
        for key in [k for k, held in self._held.items() if held.until <= now]:
            del self._held[key]

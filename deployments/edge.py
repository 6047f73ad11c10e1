"""The proxy's edge: request bodies bounded before anything buffers them, and every error JSON.

Serve's proxy queues a request body as fast as the client sends it, however large (the ingress
counts it only later, in another process), and answers its own faults in plain text: a 500 when
an ingress replica dies, a 404 for no route, 408, 503. This guard runs in every proxy process,
outside Serve's ASGI app (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, set by shared/cluster.py and
k8s/generate.py), and so sees each request before the proxy does:

- a declared Content-Length past the cap is refused before a byte of the body is read (the
  cap is the video limit's on the routes that take video, the image limit's on the rest);
- any other body is read here while counting, cut off with a 413 at the first chunk past the
  cap, and otherwise replayed to the proxy, so at most one capped copy waits in each process;
- refusals close the connection: the unread rest must never be parsed as a next request;
- a plain-text error on the way out becomes `{"error": ...}`, and a fault (a 500, or no answer
  at all) a 503 with Retry-After. Everything else passes through untouched, streams included;
- the headers by which a caller could steer Serve itself (its per-request timeout, which 0
  turns off, disconnect handling, replica affinity) are dropped: they are for a trusted hop
  (HAProxy in front of the proxy), never for clients;
- a rejection the ingress says holds (shared/holds.py: a spent key's 429 until its retry time,
  an unknown key's 401 until the key store is next read) is answered here for that key and
  route until then: a flood of them costs the proxy's HTTP parsing only, not a trip through
  Serve's router and an ingress replica each (bench/README.md has the figures);
- those held answers are paced (shared/pace.py): a flood's closed loop would otherwise take
  as much of this process, which every admitted request also passes through, as the scheduler
  gives it. Anyone not flooding is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import holds
from shared.holds import HeldAnswers
from shared.limits import MB, body_cap, too_large_message
from shared.pace import Pace
from shared.settings import settings

# The proxy's own logger, so these lines land in its log file next to Serve's.
logger = logging.getLogger("ray.serve")

UNAVAILABLE = "Service unavailable: retry shortly"
TIMED_OUT = "Timed out: retry shortly"
INVALID_FRAMING = "Invalid request: malformed Content-Length or Transfer-Encoding"
MAX_ERROR_TEXT = 200  # characters of a plain-text error kept as the JSON message
# The proxy's plain-text errors -> what the API answers instead. A 500 there is a dead or
# failing replica (ours answer JSON), a 408 the proxy's request timeout: both are worth a retry.
TRANSLATED = {
    404: (404, "Not found"),
    408: (504, TIMED_OUT),
    500: (503, UNAVAILABLE),
    503: (503, UNAVAILABLE),
}
# Request headers Serve's proxy obeys (http_util.parse_request_timeout_header and friends); in
# ASGI form, lower case. `serve_multiplexed_model_id` matches with '-' or '_'.
_SERVE_CONTROL = {
    b"x-request-timeout-seconds",
    b"x-request-disconnect-disabled",
    b"x-session-id",
    b"serve_multiplexed_model_id",
    b"serve-multiplexed-model-id",
}
# ... and the one the ingress takes to mean "this edge honours holds", which only we may send.
_DROPPED = _SERVE_CONTROL | {holds.EDGE_HEADER}
_ASKS_FOR_HOLDS = (holds.EDGE_HEADER, b"1")
# A held answer to a request whose body is at most this is sent once the body is read, so the
# connection stays open; a bigger body is not read: answered, and the connection closed.
HELD_READ_BYTES = 64 * 1024
# When a hold runs out one request asks the ingress again; the others with the same key wait
# this long for its answer before going on by themselves.
ASK_WAIT_S = 1.0
# Headers of a translated error that describe the old body, or that the JSON answer sets itself.
_REPLACED = {b"content-type", b"content-length", b"transfer-encoding", b"x-content-type-options"}


def json_error(
    status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Message, Message]:
    """The two ASGI messages of a `{"error": message}` answer."""
    body = json.dumps({"error": message}).encode()
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *(headers or ()),
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"x-content-type-options", b"nosniff"),
            ],
        },
        {"type": "http.response.body", "body": body},
    )


def framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool] | None:
    """(declared Content-Length, chunked) of a request; None when the two disagree or are bad.

    uvicorn's parser already refuses most of these; checked again because a body framed two
    ways is how requests get smuggled past a limit.
    """
    length = None
    encoding = None
    for name, value in headers:
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (length is not None and int(value) != length):
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            encoding = value if encoding is None else encoding + b"," + value
    if encoding is None:
        return length, False
    if length is not None or not encoding.strip().lower().endswith(b"chunked"):
        return None
    return None, True


def _is_plain_text(start: Message) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.lower().startswith(b"text/plain")
    return False


def translated(start: Message, text: bytes) -> tuple[Message, Message]:
    """A plain-text error response as the API's JSON one."""
    status, message = TRANSLATED.get(start["status"], (start["status"], None))
    if message is None:
        message = text.decode("utf-8", "replace").strip()[:MAX_ERROR_TEXT] or "Request failed"
    headers = []
    retry_after = None
    for name, value in start.get("headers", ()):
        lowered = name.lower()
        if lowered == b"retry-after":
            retry_after = value
        elif lowered not in _REPLACED:
            headers.append((name, value))
    if retry_after is None and status == 503:
        retry_after = b"1"
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    return json_error(status, message, headers)


Holding = Callable[[holds.Hold, int, list[tuple[bytes, bytes]], bytes], object]


class _Outbound:
    """The downstream app's `send`: passes a response through, or holds a plain-text error
    (a few hundred bytes from the proxy) to send it as JSON once complete. A response with a
    hold loses its hold header here, and is handed to `holding` once its body is complete."""

    __slots__ = ("body", "held", "hold", "holding", "send", "start", "started", "text")

    def __init__(self, send: Send, holding: Holding) -> None:
        self.send = send
        self.holding = holding
        self.started = False
        self.held: Message | None = None
        self.text = bytearray()
        self.hold: holds.Hold | None = None
        self.start: Message | None = None
        self.body = bytearray()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and any(
            name.lower() == holds.HOLD_HEADER for name, _ in message.get("headers", ())
        ):
            message = self._take_hold(message)
        elif self.hold is not None and message["type"] == "http.response.body":
            self._collect(message)
        if self.held is not None:
            if message["type"] == "http.response.body":
                room = MAX_ERROR_TEXT * 4 - len(self.text)  # UTF-8: up to 4 bytes a character
                if room > 0:
                    self.text += message.get("body", b"")[:room]
                if not message.get("more_body", False):
                    await self._flush()
            return
        if message["type"] == "http.response.start":
            self.started = True
            if message["status"] >= 400 and _is_plain_text(message):
                self.held = message
                return
        await self.send(message)

    def _take_hold(self, start: Message) -> Message:
        headers = []
        for name, value in start.get("headers", ()):
            if name.lower() == holds.HOLD_HEADER:
                self.hold = holds.decode(value)
            else:
                headers.append((name, value))
        start = {**start, "headers": headers}
        self.start = start
        return start

    def _collect(self, message: Message) -> None:
        assert self.hold is not None and self.start is not None
        self.body += message.get("body", b"")
        if len(self.body) > holds.MAX_BODY:
            self.hold = None  # not a rejection the edge repeats
        elif not message.get("more_body", False):
            self.holding(self.hold, self.start["status"], self.start["headers"], bytes(self.body))
            self.hold = None

    async def _flush(self) -> None:
        held, self.held = self.held, None
        assert held is not None
        for message in translated(held, bytes(self.text)):
            await self.send(message)

    async def finish(self) -> None:
        """After the app: complete a held error, or answer for an app that never did."""
        if self.held is not None:
            await self._flush()
        elif not self.started:
            # The proxy gives up this way when the replica died mid-request; uvicorn would
            # answer its bare text/plain 500.
            for message in json_error(503, UNAVAILABLE, [(b"retry-after", b"1")]):
                await self.send(message)


# The routes that take video (dedicated endpoints' predict, by their own route or the SDK's):
# their bodies may reach the video limit; every other route's stop at the image limit.
VIDEO_ROUTE = re.compile(r"^/(?:endpoints/[^/]+|api/deployments/[^/]+/[^/]+)/predict/?$")


@dataclass(frozen=True)
class BodyLimit:
    cap: int  # request body bytes
    message: str  # the 413's


def _body_limit(limit: int) -> BodyLimit:
    return BodyLimit(body_cap(limit), too_large_message(limit))


@dataclass(frozen=True)
class _Arrival:
    at: float  # when the edge received the request: holds count from then
    held_key: bytes
    length: int | None  # declared Content-Length
    chunked: bool
    limit: BodyLimit


class EdgeGuard:
    """Pure ASGI middleware for the Serve proxy; `middlewares()` is the proxy callback."""

    def __init__(
        self,
        app: ASGIApp,
        max_upload_bytes: int | None = None,
        max_video_bytes: int | None = None,
        count_held: Callable[[str, int], None] | None = None,
        held_answers_per_s: float | None = None,
    ) -> None:
        self.app = app
        self.held = HeldAnswers()
        if held_answers_per_s is None:
            held_answers_per_s = settings().held_answers_per_s
        self.pace = Pace(held_answers_per_s)
        # Keys whose hold ran out, while one request asks again (set when its answer is in).
        self.asking: dict[bytes, asyncio.Future[None]] = {}
        # (application, status) of each answer given from `held`: the proxy's own metric.
        self.count_held = count_held or _held_answers_metric()
        # Read once here: the proxy builds its middleware stack once, at start.
        if max_upload_bytes is None:
            max_upload_bytes = int(settings().max_upload_mb * MB)
        if max_video_bytes is None:
            max_video_bytes = int(settings().max_video_mb * MB)
        self.images = _body_limit(max_upload_bytes)
        self.videos = _body_limit(max(max_video_bytes, max_upload_bytes))

    def limit(self, scope: Scope) -> BodyLimit:
        """The video cap for a keyed multipart request to a route that takes video: nobody
        without a key makes the proxy hold a video's bytes."""
        if not VIDEO_ROUTE.match(scope.get("path", "")):
            return self.images
        headers = dict(scope["headers"])
        keyed = headers.get(b"authorization", b"").lower().startswith(b"bearer ")
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        return self.videos if keyed and multipart else self.images

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received_at = time.monotonic()
        headers = [(n, v) for n, v in scope["headers"] if n not in _DROPPED]
        frame = framing(headers)
        if frame is None:
            await _refuse(send, 400, INVALID_FRAMING)
            return
        length, chunked = frame
        limit = self.limit(scope)
        if length is not None and length > limit.cap:
            await _refuse(send, 413, limit.message)
            return
        held_key = _held_key(scope, headers)
        answer = self.held.answer(held_key, received_at)
        asks = False
        if answer is None and self.held.ran_out(held_key, received_at):
            answer, asks = await self._ask_again(held_key)
        if answer is not None:
            await self._answer_held(answer, length, chunked, receive, send)
            return
        try:
            arrival = _Arrival(received_at, held_key, length, chunked, limit)
            await self._forward(scope, headers, arrival, receive, send)
        finally:
            if asks:
                self._asked(held_key)

    async def _forward(
        self,
        scope: Scope,
        headers: list[tuple[bytes, bytes]],
        arrival: _Arrival,
        receive: Receive,
        send: Send,
    ) -> None:
        """On to Serve's proxy: the body counted against the cap, and a hold of the answer
        filed from when the request arrived."""
        if arrival.chunked or arrival.length:
            replay = await self._read_body(receive, send, arrival.limit)
            if replay is None:
                return
            receive = replay
        headers.append(_ASKS_FOR_HOLDS)
        scope = {**scope, "headers": headers}

        def holding(hold: holds.Hold, status: int, headers: list, body: bytes) -> None:
            self.held.hold(arrival.held_key, arrival.at, hold, status, headers, body)

        outbound = _Outbound(send, holding)
        try:
            await self.app(scope, receive, outbound)
        except Exception:
            if outbound.started and outbound.held is None:
                raise  # mid-response: uvicorn closes the connection, the only honest answer
            logger.warning("Request failed before its response; answering 503", exc_info=True)
        await outbound.finish()

    async def _ask_again(self, key: bytes) -> tuple[holds.Answer | None, bool]:
        """(answer, asks) for a key whose hold ran out. One request asks the ingress again; the
        others wait for its answer, held again or not, instead of a whole flood's requests in
        flight at that moment each making the round trip."""
        asking = self.asking.get(key)
        if asking is None:
            self.asking[key] = asyncio.get_running_loop().create_future()
            return None, True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asking), ASK_WAIT_S)
        return self.held.answer(key, time.monotonic()), False

    def _asked(self, key: bytes) -> None:
        """The asking request is done: held again, or else nothing is held for the key."""
        asking = self.asking.pop(key, None)
        if self.held.ran_out(key, time.monotonic()):
            self.held.forget(key)
        if asking is not None and not asking.done():
            asking.set_result(None)

    async def _answer_held(
        self, answer: holds.Answer, length: int | None, chunked: bool, receive: Receive, send: Send
    ) -> None:
        """A held answer: after a small body is read, so the connection stays open; before a
        big one, closing the connection (the body is never worth reading for a rejection)."""
        headers = answer.headers
        if chunked or (length or 0) > HELD_READ_BYTES:
            headers = [*headers, (b"connection", b"close")]
        elif length:
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client left: nobody to answer
                more = message.get("more_body", False)
        wait = self.pace.wait(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        self.count_held(answer.application, answer.status)

    async def _read_body(self, receive: Receive, send: Send, limit: BodyLimit) -> Receive | None:
        """The whole body, counted as it comes: a `receive` that replays it, or None once
        the request has been answered (too large) or abandoned (the client left)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # disconnected mid-body: nobody left to answer
            size += len(message.get("body", b""))
            if size > limit.cap:
                await _refuse(send, 413, limit.message)
                return None
            messages.append(message)
            if not message.get("more_body", False):
                break
        messages.reverse()

        async def replay() -> Message:
            # Popped, not indexed: once the proxy has queued a chunk, only the queue holds it.
            if messages:
                return messages.pop()
            return await receive()  # then the real disconnect, which the proxy waits for

        return replay


async def _refuse(send: Send, status: int, message: str) -> None:
    # `connection: close` makes uvicorn close after the answer instead of parsing the unread
    # body as the next request.
    for part in json_error(status, message, [(b"connection", b"close")]):
        await send(part)


def _held_key(scope: Scope, headers: list[tuple[bytes, bytes]]) -> bytes:
    authorization = origin = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value
        elif name == b"origin":
            origin = value
    target = scope.get("path", "") + "?" + scope.get("query_string", b"").decode("latin-1")
    return holds.held_key(scope["method"].encode(), target, authorization, origin)


def _held_answers_metric() -> Callable[[str, int], None]:
    """`ray_yolo_held_answers_total{application, status}` from this proxy process: the 401s and
    429s it answered from holds, which no ingress replica counted."""
    # Imported here: unit tests build the guard without Ray's metrics machinery.
    from ray.util.metrics import Counter

    from deployments.metrics import HELD_ANSWERS

    counter = Counter(HELD_ANSWERS.name, HELD_ANSWERS.description, tag_keys=HELD_ANSWERS.tags)

    def count(application: str, status: int) -> None:
        counter.inc(tags={"application": application, "status": str(status)})

    return count


def middlewares() -> list[Middleware]:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.edge:middlewares."""
    return [Middleware(EdgeGuard)]

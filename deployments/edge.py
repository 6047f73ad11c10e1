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
  (HAProxy in front of the proxy), never for clients.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.limits import MB, body_cap, too_large_message
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


class _Outbound:
    """The downstream app's `send`: passes a response through, or holds a plain-text error
    (a few hundred bytes from the proxy) to send it as JSON once complete."""

    __slots__ = ("held", "send", "started", "text")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False
        self.held: Message | None = None
        self.text = bytearray()

    async def __call__(self, message: Message) -> None:
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


class EdgeGuard:
    """Pure ASGI middleware for the Serve proxy; `middlewares()` is the proxy callback."""

    def __init__(
        self,
        app: ASGIApp,
        max_upload_bytes: int | None = None,
        max_video_bytes: int | None = None,
    ) -> None:
        self.app = app
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
        if any(name in _SERVE_CONTROL for name, _ in scope["headers"]):
            headers = [(n, v) for n, v in scope["headers"] if n not in _SERVE_CONTROL]
            scope = {**scope, "headers": headers}
        frame = framing(scope["headers"])
        if frame is None:
            await _refuse(send, 400, INVALID_FRAMING)
            return
        length, chunked = frame
        limit = self.limit(scope)
        if length is not None and length > limit.cap:
            await _refuse(send, 413, limit.message)
            return
        if chunked or length:
            replay = await self._read_body(receive, send, limit)
            if replay is None:
                return
            receive = replay
        outbound = _Outbound(send)
        try:
            await self.app(scope, receive, outbound)
        except Exception:
            if outbound.started and outbound.held is None:
                raise  # mid-response: uvicorn closes the connection, the only honest answer
            logger.warning("Request failed before its response; answering 503", exc_info=True)
        await outbound.finish()

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


def middlewares() -> list[Middleware]:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=deployments.edge:middlewares."""
    return [Middleware(EdgeGuard)]

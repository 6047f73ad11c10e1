"""What the ingress tells browsers: which other origins may call it, and not to sniff types.

Same-origin by default: with no `cors_origins` configured no CORS header is ever sent, so a page
on another origin cannot read any response (the Predict page is same-origin and needs none).
Configured origins get Starlette's CORSMiddleware, whose refusals come back as the API's JSON
error instead of plain text.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a cross-origin page needs for the API: the key header, multipart bodies, and to read the
# headers that say when to retry.
ALLOW_METHODS = ("GET", "POST")
ALLOW_HEADERS = ("Authorization", "Content-Type")
EXPOSE_HEADERS = ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
PREFLIGHT_MAX_AGE_S = 600


class JsonCORSMiddleware(CORSMiddleware):
    """CORSMiddleware whose refused preflights answer `{"error": ...}` like every other error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")
        }
        message = bytes(response.body).decode() or "Disallowed CORS request"
        return JSONResponse({"error": message}, status_code=response.status_code, headers=headers)


def add_cors(app: Starlette, origins: Sequence[str]) -> None:
    """Allow cross-origin calls from `origins` (already validated); none: add nothing."""
    if not origins:
        return
    app.add_middleware(
        JsonCORSMiddleware,
        allow_origins=list(origins),
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        allow_credentials=False,  # keys are Bearer headers; cookies are never used
        max_age=PREFLIGHT_MAX_AGE_S,
    )


class NoSniffMiddleware:
    """`X-Content-Type-Options: nosniff` on every response: error JSON echoes bits of the
    request, which a browser must never take for HTML or script."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, send_with_header)

"""The ingress's metrics middleware on a real Starlette app, driven over ASGI in process.

A stand-in recorder replaces IngressMetrics (whose Ray metric objects need a replica); what is
under test is what the middleware records: the matched route's template, the status actually
sent, and the body bytes actually read.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments.metrics import RequestMetricsMiddleware, route_template
from shared.errors import ApiError


@dataclass
class Recorded:
    calls: list[tuple[str, int, int]] = field(default_factory=list)

    def request_done(self, route: str, status: int, seconds: float, received: int) -> None:
        assert seconds >= 0
        self.calls.append((route, status, received))


async def _read_all(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"n": len(body)})


async def _unauthorized(request: Request) -> Response:
    raise ApiError(401, "Missing API key")


async def _limited(request: Request) -> Response:
    raise ApiError(429, "Rate limit exceeded", {"Retry-After": "3"})


async def _broken(request: Request) -> Response:
    raise RuntimeError("bug")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


def make_app(recorded: Recorded) -> Starlette:
    app = Starlette(
        routes=[
            Route("/api/models/{model_id}/predict", _read_all, methods=["POST"]),
            Route("/private", _unauthorized),
            Route("/limited", _limited),
            Route("/broken", _broken),
        ],
        exception_handlers={ApiError: _api_error},
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=recorded)
    return app


def call(app: Starlette, method: str, path: str, chunks: list[bytes] = ()) -> int:
    """One HTTP request through the ASGI app; returns the status sent."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks or [b""])
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }

    async def run() -> None:
        # Starlette re-raises after sending its 500, for the server to log.
        with contextlib.suppress(RuntimeError):
            await app(scope, receive, send)

    asyncio.run(run())
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_route_template_status_and_bytes_read_are_recorded() -> None:
    recorded = Recorded()
    status = call(make_app(recorded), "POST", "/api/models/yolo26n/predict", [b"abc", b"defgh"])
    assert status == 200
    assert recorded.calls == [("/api/models/{model_id}/predict", 200, 8)]


def test_a_model_id_never_becomes_a_label() -> None:
    recorded = Recorded()
    app = make_app(recorded)
    for model in ("yolo26n", "made-up-1", "made-up-2"):
        call(app, "POST", f"/api/models/{model}/predict")
    assert {route for route, _, _ in recorded.calls} == {"/api/models/{model_id}/predict"}


@pytest.mark.parametrize(
    ("path", "status"),
    [("/private", 401), ("/limited", 429), ("/broken", 500), ("/nowhere", 404)],
)
def test_the_status_sent_is_the_status_recorded(path: str, status: int) -> None:
    recorded = Recorded()
    assert call(make_app(recorded), "GET", path) == status
    expected_route = "unmatched" if path == "/nowhere" else path
    assert recorded.calls == [(expected_route, status, 0)]


def test_route_template_without_a_match() -> None:
    assert route_template({}) == "unmatched"
    assert route_template({"route": object()}) == "unmatched"

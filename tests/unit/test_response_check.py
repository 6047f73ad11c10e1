"""The test-run response check, on a real Starlette app: a body that is not what its route
declares becomes a 500 naming the route and the mismatch when on; nothing changes when off."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from deployments import operations, response_check, schemas
from deployments.routes import ApiRoute, Header, Operation, Reply

HEALTH = Operation("x", {200: Reply(schemas.ServiceHealth, "x")})
LIMITED = Operation("x", {200: Reply(schemas.ServiceHealth, "x")}, counted=operations.COUNTED)
CHALLENGED = Operation(
    "x", {401: Reply(schemas.Error, "x", (Header("WWW-Authenticate", "x", required=True),))}
)


def _route(path: str, body: object, status: int = 200, operation: Operation = HEALTH) -> ApiRoute:
    async def endpoint(request: Request) -> Response:
        return JSONResponse(body, status_code=status)

    return ApiRoute(path, endpoint, methods=["GET"], operation=operation)


async def _page(request: Request) -> Response:
    return PlainTextResponse("<html>")


async def _loose(request: Request) -> Response:
    return JSONResponse({"anything": 1})


def app(on: bool | None) -> Starlette:
    app = Starlette(
        routes=[
            _route("/good", {"healthy": True, "status": "ok"}),
            _route("/typo", {"healthy": True, "satus": "ok"}),
            _route("/type", {"healthy": "yes", "status": "ok"}),
            _route("/created", {"healthy": True, "status": "ok"}, 201),
            _route("/limited", {"error": "slow down"}, 429, LIMITED),
            _route("/no-challenge", {"error": "who?"}, 401, CHALLENGED),
            _route("/odd-error", {"message": "no"}, 418),
            Route("/page", _page, include_in_schema=False),
            Route("/loose", _loose, include_in_schema=False),
        ]
    )
    response_check.add_response_check(app, on)
    return app


def get(on: bool | None, path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app(on))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path)

    return asyncio.run(call())


def test_a_declared_body_passes_untouched() -> None:
    response = get(True, "/good")
    assert response.status_code == 200 and response.json() == {"healthy": True, "status": "ok"}


@pytest.mark.parametrize(
    ("path", "complaint"),
    [
        ("/typo", "status: Field required; satus: Extra inputs are not permitted"),
        ("/type", "healthy: Input should be True"),
        ("/created", "an undeclared status 201"),
        ("/limited", "without its header Retry-After"),
        ("/no-challenge", "without its header WWW-Authenticate"),
        ("/odd-error", "a body that is not Error"),
    ],
)
def test_a_mismatch_is_a_500_naming_the_route(path: str, complaint: str) -> None:
    response = get(True, path)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error.startswith(f"Response check: GET {path} answered ")
    assert complaint in error
    schemas.Error.model_validate(response.json())


def test_what_is_not_the_api_s_is_left_alone() -> None:
    assert get(True, "/page").text == "<html>"
    assert get(True, "/loose").json() == {"anything": 1}
    # An unmatched path's 404 is Starlette's plain text here (the ingress makes it JSON).
    assert get(True, "/nowhere").status_code == 404


def test_off_changes_nothing() -> None:
    assert get(False, "/typo").json() == {"healthy": True, "satus": "ok"}
    assert get(False, "/created").status_code == 201


def test_on_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(response_check.ENV, "1")
    assert response_check.enabled()
    assert get(None, "/typo").status_code == 500
    monkeypatch.setenv(response_check.ENV, "0")
    assert not response_check.enabled()
    monkeypatch.delenv(response_check.ENV)
    assert get(None, "/typo").status_code == 200

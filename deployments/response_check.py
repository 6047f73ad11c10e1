"""A test-run guard: every JSON body must match the model its route declares for that status.

The handlers build plain dicts (the spec's key order and number formatting, no model instances
on the hot path), so nothing else would notice one drifting from `deployments/schemas.py`, and
with it from `/openapi.json`. With `YOLO_VALIDATE_RESPONSES=1` in the app's environment, each
JSON response is held until complete and validated (strict, closed models), with the headers
its reply requires; a mismatch is answered as a 500 naming the route and what is wrong, so any
live test touching that route fails loudly. Errors a route does not declare, and those of
unmatched paths, must still be the API's error body. Off by default: production pays nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.routes import Operation
from deployments.schemas import Error
from shared.settings import settings

ENV = "YOLO_VALIDATE_RESPONSES"
_SHOWN_ERRORS = 5

logger = logging.getLogger("ray.serve")


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return settings(environ).validate_responses


def add_response_check(app: Starlette, on: bool | None = None) -> None:
    """Validate `app`'s responses when `on`, or when the environment asks for it."""
    if enabled() if on is None else on:
        app.add_middleware(ResponseCheckMiddleware)
        logger.warning("%s: every JSON response is checked against its route's model", ENV)


def mismatch(operation: Operation | None, status: int, headers: Headers, body: bytes) -> str | None:
    """What is wrong with this JSON response of a route declaring `operation`, or None."""
    reply = operation.reply(status) if operation else None
    model: type[BaseModel] = Error
    if reply is not None:
        missing = [h.name for h in reply.headers if h.required and h.name not in headers]
        if missing:
            return f"without its header {', '.join(missing)}"
        model = reply.model
    elif status < 400:
        # A route outside the API (no operation) may answer what it likes but errors.
        return f"an undeclared status {status}" if operation else None
    try:
        model.model_validate_json(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        shown = "; ".join(problems[:_SHOWN_ERRORS])
        more = (
            f" (and {len(problems) - _SHOWN_ERRORS} more)" if len(problems) > _SHOWN_ERRORS else ""
        )
        return f"a body that is not {model.__name__}: {shown}{more}"
    return None


def _is_json(start: Message) -> bool:
    content_type = Headers(raw=start.get("headers", [])).get("content-type", "")
    return content_type.partition(";")[0].strip() == "application/json"


class ResponseCheckMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []  # a JSON response's start, until its body is complete
        body = bytearray()

        async def checking_send(message: Message) -> None:
            if message["type"] == "http.response.start" and _is_json(message):
                held.append(message)
                return
            if not held or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            start = held[0]
            route = scope.get("route")
            problem = mismatch(
                getattr(route, "operation", None),
                start["status"],
                Headers(raw=start["headers"]),
                bytes(body),
            )
            if problem is None:
                await send(start)
                await send({"type": "http.response.body", "body": bytes(body)})
                return
            where = f"{scope['method']} {getattr(route, 'path', scope['path'])}"
            message_text = f"Response check: {where} answered {start['status']} with {problem}"
            logger.error("%s", message_text)
            await JSONResponse({"error": message_text}, status_code=500)(scope, receive, send)

        await self.app(scope, receive, checking_send)

"""What a route declares about itself: its OpenAPI operation, attached to the route.

An `ApiRoute` is a Starlette `Route` carrying an `Operation` (summary, path parameters, request
forms, and per status the reply: body model and headers). `deployments/openapi.py` walks an
app's real route table and turns the declarations into the document, and
`deployments/response_check.py` holds live responses to them, so there is no second list of
routes anywhere. Routes outside the API (the Predict page) are plain Routes with
`include_in_schema=False`; a plain Route left in the schema is an error, not a silent gap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from starlette.routing import BaseRoute, Mount, Route


@dataclass(frozen=True)
class Header:
    name: str
    description: str
    required: bool = False
    kind: Literal["integer", "string"] = "integer"


@dataclass(frozen=True)
class Alternative:
    """A body a reply may be sent as instead of its JSON, when the request's Accept asks."""

    media_type: str
    model: type[BaseModel] | None = None  # the model of each line (NDJSON); None: binary


@dataclass(frozen=True)
class Reply:
    """One status of an operation: its JSON body's model and the headers that come with it."""

    model: type[BaseModel]
    description: str  # may name the document's facts, e.g. {max_upload_mb}
    headers: tuple[Header, ...] = ()
    name: str | None = None  # a reply several operations share: one components/responses entry
    alternatives: tuple[Alternative, ...] = ()


@dataclass(frozen=True)
class PathParam:
    name: str  # as the document names it
    description: str
    pattern: str
    route_name: str | None = None  # as the route's path names it, where that differs
    example: str | None = None

    @property
    def in_route(self) -> str:
        return self.route_name or self.name


@dataclass(frozen=True)
class Form:
    """A request body the operation accepts, by media type."""

    media_type: str
    model: type[BaseModel]


@dataclass(frozen=True)
class Counted:
    """What a route counted against the app's default rate limit adds, where the app has one."""

    reply: Reply  # the 429
    headers: tuple[Header, ...]  # on its successes


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, Reply]
    params: tuple[PathParam, ...] = ()
    forms: tuple[Form, ...] = ()
    public: bool = False  # no API key
    counted: Counted | None = None
    # The query string's parameters, one model field each: the handler parses the query with
    # this model, and the document lists its fields.
    query: type[BaseModel] | None = None

    def reply(self, status: int) -> Reply | None:
        if status == 429 and self.counted:
            return self.counted.reply
        return self.responses.get(status)


class ApiRoute(Route):
    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        *,
        methods: Sequence[str],
        operation: Operation,
        include_in_schema: bool = True,
    ) -> None:
        super().__init__(path, endpoint, methods=methods, include_in_schema=include_in_schema)
        self.operation = operation


class ApiMount(Mount):
    """Routes under a templated prefix, whose parameters and replies each route gains (the
    prefix's replies win: they answer before the route is reached)."""

    def __init__(
        self,
        path: str,
        routes: Sequence[BaseRoute],
        *,
        params: tuple[PathParam, ...],
        responses: Mapping[int, Reply] | None = None,
    ) -> None:
        super().__init__(path, routes=routes)
        self.params = params
        self.responses = dict(responses or {})

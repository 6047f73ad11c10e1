"""The OpenAPI 3.1 document of a route table, generated from what its routes declare.

Like Starlette's `SchemaGenerator`, it walks the app's real routes (mounts included); each
`ApiRoute`'s `Operation` gives the path item, and the pydantic models its replies and forms name
(`deployments/schemas.py`) give `components/schemas`. Nothing is listed twice: a route or a
model that exists is described, and one that does not is not. tests/test_openapi.py fuzzes the
live service against the result with schemathesis.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from starlette.routing import BaseRoute, Mount, Route

from deployments.routes import ApiMount, ApiRoute, Header, Operation, PathParam, Reply
from shared.keys import KEY_PATTERN
from shared.ratelimit import RateLimit
from shared.settings import DEFAULT_MAX_UPLOAD_MB

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
_JSON = "application/json"
_SCHEMAS = "#/components/schemas/"
_PARAM = re.compile(r"{(\w+)(:\w+)?}")


@dataclass(frozen=True)
class Site:
    """What the document says about the app serving it."""

    title: str
    server_url: str = ""  # the app's route prefix
    rate_limit: RateLimit | None = None  # the app's default limit, on routes that count it
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    allow_url_sources: bool = False
    examples: Mapping[str, str] = field(default_factory=dict)  # path parameter -> a real value


def site(
    mode: str,
    *,
    server_url: str = "",
    endpoint: str | None = None,
    model: str | None = None,
    models: Sequence[str] = (),
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    rate_limit: RateLimit | None = None,
    allow_url_sources: bool = False,
) -> Site:
    """The site of a `shared` or `dedicated` ingress mounted at `server_url`."""
    if mode == "shared":
        title = "YOLO Endpoints: shared predict service"
    else:
        title = f"YOLO Endpoints: dedicated endpoint {endpoint}" + (f" ({model})" if model else "")
    return Site(
        title,
        server_url,
        rate_limit,
        max_upload_mb,
        allow_url_sources,
        # A real model, so that the documentation's example (and the fuzzer's) reaches one.
        {"modelId": models[0]} if models else {},
    )


@dataclass(frozen=True)
class Endpoint:
    path: str  # as documented: `{modelId}`, not the route's `{model_id}`
    method: str
    operation: Operation


def endpoints(routes: Sequence[BaseRoute]) -> Iterator[Endpoint]:
    """Every documented (path, method) of a route table, mounts flattened into their routes."""
    for route in routes:
        if isinstance(route, ApiMount):
            for inner in endpoints(route.routes):
                operation = dataclasses.replace(
                    inner.operation,
                    params=(*route.params, *inner.operation.params),
                    responses={**inner.operation.responses, **route.responses},
                )
                path = _documented(route.path, route.params) + inner.path
                yield Endpoint(path, inner.method, operation)
        elif isinstance(route, ApiRoute) and route.include_in_schema:
            path = _documented(route.path, route.operation.params)
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                yield Endpoint(path, method.lower(), route.operation)
        elif isinstance(route, Route | Mount) and getattr(route, "include_in_schema", True):
            raise ValueError(
                f"route {route.path} declares no operation: make it an ApiRoute, or leave it "
                "out of the document with include_in_schema=False"
            )


def _documented(path: str, params: Sequence[PathParam]) -> str:
    """The route's path with its parameters as the document names them (each one declared)."""
    declared = {p.in_route: p for p in params}
    in_path = [m.group(1) for m in _PARAM.finditer(path)]
    if sorted(in_path) != sorted(declared):
        raise ValueError(f"route {path} declares path parameters {sorted(declared)}")
    return _PARAM.sub(lambda m: "{" + declared[m.group(1)].name + "}", path)


class _Schemas(GenerateJsonSchema):
    # A property's title repeats its name; only the models' own titles say anything.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


class _Builder:
    def __init__(self, site: Site, found: list[Endpoint]):
        self.site = site
        self.found = found
        self.facts = {"max_upload_mb": f"{site.max_upload_mb:g}"}
        self.shared_replies: dict[str, dict[str, Any]] = {}
        models = sorted(
            {reply.model for e in found for reply in self._replies(e.operation).values()}
            | {
                alternative.model
                for e in found
                for reply in self._replies(e.operation).values()
                for alternative in reply.alternatives
                if alternative.model is not None
            }
            | {form.model for e in found for form in e.operation.forms},
            key=lambda m: m.__name__,
        )
        refs, defs = models_json_schema(
            [(m, "validation") for m in models],
            by_alias=True,
            ref_template=_SCHEMAS + "{model}",
            schema_generator=_Schemas,
        )
        self.refs = {model: ref["$ref"] for (model, _), ref in refs.items()}
        self.schemas: dict[str, Any] = defs.get("$defs", {})

    def _replies(self, operation: Operation) -> dict[int, Reply]:
        replies = dict(operation.responses)
        if operation.counted and self.site.rate_limit:
            replies[429] = operation.counted.reply
        return dict(sorted(replies.items()))

    def paths(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for endpoint in self.found:
            item = paths.setdefault(endpoint.path, {})
            if endpoint.method in item:
                raise ValueError(f"{endpoint.method.upper()} {endpoint.path} is routed twice")
            item[endpoint.method] = self._operation(endpoint.operation)
        return paths

    def _operation(self, operation: Operation) -> dict[str, Any]:
        counted = self.site.rate_limit if operation.counted else None
        summary = operation.summary
        if counted:
            summary += f" ({counted.requests} requests per {counted.window_s:g} s per API key)"
        out: dict[str, Any] = {"summary": summary}
        if operation.public:
            out["security"] = []
        parameters = [self._param(p) for p in operation.params]
        if operation.query is not None:
            parameters += _query_params(operation.query)
        if parameters:
            out["parameters"] = parameters
        if operation.forms:
            content = {f.media_type: self._form(f.media_type, f.model) for f in operation.forms}
            out["requestBody"] = {"required": True, "content": content}
        success_headers = operation.counted.headers if counted and operation.counted else ()
        out["responses"] = {
            str(status): self._reply(reply, success_headers if status < 300 else ())
            for status, reply in self._replies(operation).items()
        }
        return out

    def _param(self, param: PathParam) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": param.name,
            "in": "path",
            "required": True,
            "description": param.description,
            "schema": {"type": "string", "pattern": param.pattern},
        }
        example = self.site.examples.get(param.name, param.example)
        if example:
            out["example"] = example
        return out

    def _form(self, media_type: str, model: type[BaseModel]) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": {"$ref": self.refs[model]}}
        if media_type.startswith("multipart/"):
            properties = self.schemas[self.refs[model].removeprefix(_SCHEMAS)]["properties"]
            binary = [n for n, p in properties.items() if p.get("format") == "binary"]
            if binary:
                out["encoding"] = {n: {"contentType": "application/octet-stream"} for n in binary}
        return out

    def _reply(self, reply: Reply, extra_headers: tuple[Header, ...]) -> dict[str, Any]:
        content: dict[str, Any] = {_JSON: {"schema": {"$ref": self.refs[reply.model]}}}
        for alternative in reply.alternatives:
            content[alternative.media_type] = {
                "schema": (
                    {"$ref": self.refs[alternative.model]}
                    if alternative.model is not None
                    else {"type": "string", "format": "binary"}
                )
            }
        out: dict[str, Any] = {
            "description": reply.description.format_map(self.facts),
            "content": content,
        }
        headers = (*reply.headers, *extra_headers)
        if headers:
            out["headers"] = {h.name: _header(h) for h in headers}
        if reply.name is None or extra_headers:
            return out
        if self.shared_replies.setdefault(reply.name, out) != out:
            raise ValueError(f"two different replies are named {reply.name}")
        return {"$ref": f"#/components/responses/{reply.name}"}


def _header(header: Header) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": header.kind}
    if header.kind == "integer":
        schema["minimum"] = 0
    return {"description": header.description, "required": header.required, "schema": schema}


def document(routes: Sequence[BaseRoute], site: Site) -> dict[str, Any]:
    """The document of `routes` (an app's route table, mounts included) served by `site`."""
    builder = _Builder(site, list(endpoints(routes)))
    paths = builder.paths()
    urls = "may" if site.allow_url_sources else "may not"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": site.title,
            "version": API_VERSION,
            "description": "Ultralytics Platform compatible inference. Errors are always JSON "
            f'`{{"error": "..."}}`. Images up to {site.max_upload_mb:g} MB; `source` {urls} be '
            "an http(s) URL on this server.",
        },
        "servers": [{"url": site.server_url or "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer <key>`, key matching "
                    f"{KEY_PATTERN.pattern}",
                }
            },
            "schemas": builder.schemas,
            "responses": builder.shared_replies,
        },
    }


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A query model's fields as `in: query` parameters, each with its field's schema."""
    schema = model.model_json_schema(schema_generator=_Schemas)
    required = set(schema.get("required", ()))
    out = []
    for name, declared in schema["properties"].items():
        field_schema = dict(declared)
        description = field_schema.pop("description", "")
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        if description:
            param["description"] = description
        param["schema"] = field_schema
        out.append(param)
    return out

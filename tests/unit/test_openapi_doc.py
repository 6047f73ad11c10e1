"""The OpenAPI document, offline, generated from each mode's real route table: every route is in
it, every model it names is in its components, it is valid OpenAPI 3.1, its ranges are the ones
shared/params.py enforces, and a built ingress serves exactly that document."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31
from starlette.routing import Route
from starlette.testclient import TestClient

from deployments import openapi, operations, schemas
from deployments.api_routes import ENDPOINT_PREFIX, api_routes, documented_routes
from deployments.config import EndpointArgs, SharedArgs
from deployments.ingress import IngressApp
from deployments.pages import PredictPages
from deployments.routes import ApiMount, ApiRoute, Operation, PathParam, Reply
from shared import params
from shared.ratelimit import RateLimit
from tests.fakes import FakeModel

# Only read, never served: the class's functions stand in for an instance's handlers.
HANDLERS = IngressApp
SITES = {
    "shared": openapi.site("shared", models=["yolo26n", "yolo11n"], rate_limit=RateLimit(20, 60)),
    "dedicated": openapi.site(
        "dedicated", server_url="/endpoints/a", endpoint="a", model="yolo26n"
    ),
}


def served(mode: str) -> list:
    """The app's route table as `Ingress.__serve_build_asgi_app__` assembles it."""
    return [*api_routes(mode, HANDLERS), *PredictPages(mode).routes()]


def documents() -> dict[str, dict[str, Any]]:
    return {
        mode: openapi.document(documented_routes(mode, HANDLERS, served(mode)), site)
        for mode, site in SITES.items()
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_is_valid_openapi_3_1(mode: str) -> None:
    doc = json.loads(json.dumps(documents()[mode]))
    jsonschema.Draft202012Validator(OPENAPI_31).validate(doc)
    # OPENAPI_31 leaves schema objects alone; they are JSON Schema 2020-12.
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_every_reference_resolves(mode: str) -> None:
    doc = documents()[mode]
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def _operations(routes: list, prefix: str = "") -> set[tuple[str, str]]:
    """(documented path, method) of every ApiRoute in a table, by hand from the declarations."""
    found = set()
    for route in routes:
        if isinstance(route, ApiRoute) and route.include_in_schema:
            path = route.path
            for param in route.operation.params:
                path = path.replace("{" + param.in_route + "}", "{" + param.name + "}")
            found |= {(prefix + path, m.lower()) for m in route.methods - {"HEAD"}}
    return found


def test_every_route_of_each_table_is_documented_and_nothing_else() -> None:
    docs = documents()
    for mode in ("shared", "dedicated"):
        documented = {(p, m) for p, ops in docs[mode]["paths"].items() for m in ops}
        expected = _operations(served(mode))
        if mode == "shared":
            dedicated = [r for r in api_routes("dedicated", HANDLERS) if r.path != "/openapi.json"]
            expected |= _operations(dedicated, "/endpoints/{endpoint}")
        assert documented == expected, mode
    # What the live test (tests/test_openapi.py) expects of each.
    assert set(docs["dedicated"]["paths"]) == {"/predict", "/health", "/info", "/openapi.json"}
    assert "/endpoints/{endpoint}/predict" in docs["shared"]["paths"]
    assert not any(
        p.startswith(("/static", "/examples")) or p == "/" for p in docs["shared"]["paths"]
    )


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_a_built_ingress_serves_the_document_of_its_own_route_table(mode: str, tmp_path) -> None:
    keys_file = str(tmp_path / "keys.json")
    if mode == "shared":
        config: SharedArgs | EndpointArgs = SharedArgs(
            keys_file=keys_file, rate_limit={"requests": 20, "window_s": 60}
        )
    else:
        config = EndpointArgs(name="a", model="yolo26n", keys_file=keys_file, limiter_app=None)
    ingress = IngressApp(FakeModel(), config)  # type: ignore[arg-type]
    root = "" if mode == "shared" else "/endpoints/a"
    client = TestClient(ingress.__serve_build_asgi_app__(), root_path=root)
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(documents()[mode]))


def test_the_dedicated_view_is_mounted_under_the_endpoint_prefix() -> None:
    (mount,) = [r for r in documented_routes("shared", HANDLERS, []) if isinstance(r, ApiMount)]
    assert mount.path == ENDPOINT_PREFIX
    info = documents()["shared"]["paths"]["/endpoints/{endpoint}/info"]["get"]
    assert [p["name"] for p in info["parameters"]] == ["endpoint"]
    assert info["responses"]["404"]["description"].startswith("No such endpoint")


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_every_model_a_route_names_is_in_components(mode: str) -> None:
    doc = documents()[mode]
    components = doc["components"]["schemas"]
    for route in api_routes(mode, HANDLERS):
        if not isinstance(route, ApiRoute):
            continue
        op = route.operation
        replies = [*op.responses.values(), *([op.counted.reply] if op.counted else [])]
        for model in {r.model for r in replies} | {f.model for f in op.forms}:
            schema = components[model.__name__]
            if "anyOf" in schema and "properties" not in schema:  # a union of components
                assert all(ref["$ref"].rsplit("/", 1)[-1] in components for ref in schema["anyOf"])
            elif model is not schemas.OpenApiDocument:
                wire_names = {f.alias or n for n, f in model.model_fields.items()}
                assert set(schema["properties"]) == wire_names, model
    for model in (*schemas.RESULT_TYPES.values(), schemas.Box, schemas.Keypoint, schemas.Corners):
        assert model.__name__ in documents()["shared"]["components"]["schemas"]


def test_results_are_one_of_the_task_shapes_with_class_as_its_json_name() -> None:
    components = documents()["shared"]["components"]["schemas"]
    items = components["ImageResult"]["properties"]["results"]["items"]["oneOf"]
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in items} == {
        m.__name__ for m in schemas.RESULT_TYPES.values()
    }
    segment = components["Segmentation"]["required"]
    assert segment == ["class", "name", "confidence", "box", "segments"]
    assert components["Keypoint"]["required"] == ["x", "y", "conf"]
    objects = {name: schema for name, schema in components.items() if "anyOf" not in schema}
    closed = {name for name, schema in objects.items() if not schema["additionalProperties"]}
    assert set(objects) - closed == {"OpenApiDocument"}
    # A body of several forms (the SDK's PATCH) is one of closed ones.
    forms = components["UpdateDeploymentBody"]["anyOf"]
    assert {ref["$ref"].rsplit("/", 1)[-1] for ref in forms} <= closed


def test_the_predict_forms() -> None:
    op = documents()["shared"]["paths"]["/api/models/{modelId}/predict"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/x-www-form-urlencoded"}
    assert content["multipart/form-data"]["encoding"] == {
        "file": {"contentType": "application/octet-stream"}
    }
    components = documents()["shared"]["components"]["schemas"]
    source_only = components["SourceForm"]
    assert source_only["required"] == ["source"] and "file" not in source_only["properties"]


def test_parameter_ranges_are_the_enforced_ones() -> None:
    form = documents()["shared"]["components"]["schemas"]["PredictForm"]
    fields = form["properties"]
    assert set(fields) == {"file", "source", *params.PARAMETERS}
    assert (fields["conf"]["minimum"], fields["conf"]["maximum"]) == params.CONF_RANGE
    assert (fields["iou"]["minimum"], fields["iou"]["maximum"]) == params.IOU_RANGE
    assert (fields["imgsz"]["minimum"], fields["imgsz"]["maximum"]) == params.IMGSZ_RANGE
    assert (fields["decimals"]["minimum"], fields["decimals"]["maximum"]) == (params.DECIMALS_RANGE)
    stride = fields["vid_stride"]
    assert (stride["minimum"], stride["maximum"]) == params.VID_STRIDE_RANGE
    defaults = params.PredictParams()
    assert [fields[n]["default"] for n in params.PARAMETERS] == [
        defaults.conf,
        defaults.iou,
        defaults.imgsz,
        defaults.normalize,
        defaults.decimals,
        defaults.vid_stride,
    ]
    assert form["additionalProperties"] is False
    assert form["anyOf"] == [{"required": ["file"]}, {"required": ["source"]}]  # repeatable


def test_rate_limits_are_documented_only_where_the_app_counts_them() -> None:
    docs = documents()
    shared = docs["shared"]["paths"]["/api/models/{modelId}/predict"]["post"]
    assert "20 requests per 60 s per API key" in shared["summary"]
    assert "429" in shared["responses"]
    assert "X-RateLimit-Remaining" in shared["responses"]["200"]["headers"]
    retry = docs["shared"]["components"]["responses"]["RateLimited"]["headers"]["Retry-After"]
    assert retry["required"] is True
    for path, ops in docs["dedicated"]["paths"].items():
        assert all("429" not in op["responses"] for op in ops.values()), path
    forwarded = docs["shared"]["paths"]["/api/deployments/{owner}/{deployment}/predict"]["post"]
    assert "429" not in forwarded["responses"]


def test_only_health_and_the_document_need_no_key() -> None:
    for doc in documents().values():
        open_routes = {
            path
            for path, ops in doc["paths"].items()
            for op in ops.values()
            if op.get("security") == []
        }
        assert {p.rsplit("/", 1)[-1] for p in open_routes} == {"health", "openapi.json"}


def test_the_example_source_is_a_png() -> None:
    assert base64.b64decode(schemas.EXAMPLE_SOURCE).startswith(b"\x89PNG\r\n\x1a\n")


def test_the_task_literal_is_the_registry_s() -> None:
    from typing import get_args

    from shared.registry import TASKS

    assert get_args(schemas.Task) == TASKS


# -- the generator refuses a table it cannot describe honestly ----------------------------------
async def _nothing(request):  # pragma: no cover - never served
    raise AssertionError


def test_a_route_without_a_declaration_is_an_error() -> None:
    with pytest.raises(ValueError, match="declares no operation"):
        openapi.document([Route("/new", _nothing)], SITES["shared"])
    hidden = Route("/new", _nothing, include_in_schema=False)
    assert openapi.document([hidden], SITES["shared"])["paths"] == {}


def test_a_path_parameter_must_be_declared() -> None:
    op = Operation("x", {200: Reply(schemas.Error, "x")})
    with pytest.raises(ValueError, match="path parameters"):
        openapi.document(
            [ApiRoute("/a/{b}", _nothing, methods=["GET"], operation=op)], SITES["shared"]
        )
    declared = Operation("x", {200: Reply(schemas.Error, "x")}, (PathParam("B", "b", ".*", "b"),))
    doc = openapi.document(
        [ApiRoute("/a/{b}", _nothing, methods=["GET"], operation=declared)], SITES["shared"]
    )
    assert list(doc["paths"]) == ["/a/{B}"]


def test_shared_replies_are_components() -> None:
    components = documents()["shared"]["components"]["responses"]
    assert {"BadRequest", "Unauthorized", "TooLarge", "RateLimited", "ServerError"} <= set(
        components
    )
    assert components["TooLarge"]["description"] == "The image is over 10 MB"
    assert "WWW-Authenticate" in components["Unauthorized"]["headers"]
    assert operations.UNAUTHORIZED.name == "Unauthorized"


def test_query_strings_are_documented_from_the_models_that_parse_them() -> None:
    paths = documents()["shared"]["paths"]

    def query(path: str) -> dict[str, dict]:
        params = paths[path]["get"]["parameters"]
        return {p["name"]: p for p in params if p["in"] == "query"}

    listing = query("/api/deployments/{owner}")
    assert set(listing) == {"status", "model", "limit"}
    assert listing["limit"]["schema"]["maximum"] == 100 and not listing["limit"]["required"]
    assert set(query("/api/deployments/{owner}/{deployment}/logs")) == {
        "severity",
        "limit",
        "pageToken",
    }
    metrics = query("/api/deployments/{owner}/{deployment}/metrics")
    assert metrics["range"]["schema"]["enum"] == ["1h", "6h", "24h", "7d", "30d"]
    assert metrics["range"]["schema"]["default"] == "24h"

"""The OpenAPI document, offline: valid OpenAPI 3.0, every reference resolves, and its ranges
are the ones shared/params.py enforces."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonschema
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30

from deployments import openapi
from shared import params
from shared.ratelimit import RateLimit


def documents() -> dict[str, dict[str, Any]]:
    return {
        "shared": openapi.document(
            "shared", models=["yolo26n", "yolo11n"], rate_limit=RateLimit(20, 60)
        ),
        "dedicated": openapi.document(
            "dedicated", server_url="/endpoints/a", endpoint="a", model="yolo26n"
        ),
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_is_valid_openapi_3_0(mode: str) -> None:
    doc = documents()[mode]
    jsonschema.Draft4Validator(OPENAPI_30).validate(json.loads(json.dumps(doc)))


@pytest.mark.parametrize("mode", ["shared", "dedicated"])
def test_every_reference_resolves(mode: str) -> None:
    doc = documents()[mode]
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_parameter_ranges_are_the_enforced_ones() -> None:
    form = documents()["shared"]["components"]["schemas"]["PredictForm"]
    fields = form["properties"]
    assert set(fields) == {"file", "source", *params.PARAMETERS}
    assert (fields["conf"]["minimum"], fields["conf"]["maximum"]) == params.CONF_RANGE
    assert (fields["iou"]["minimum"], fields["iou"]["maximum"]) == params.IOU_RANGE
    assert (fields["imgsz"]["minimum"], fields["imgsz"]["maximum"]) == params.IMGSZ_RANGE
    assert (fields["decimals"]["minimum"], fields["decimals"]["maximum"]) == (params.DECIMALS_RANGE)
    defaults = params.PredictParams()
    assert [fields[n]["default"] for n in params.PARAMETERS] == [
        defaults.conf,
        defaults.iou,
        defaults.imgsz,
        defaults.normalize,
        defaults.decimals,
    ]
    assert form["additionalProperties"] is False


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
    assert base64.b64decode(openapi.EXAMPLE_SOURCE).startswith(b"\x89PNG\r\n\x1a\n")

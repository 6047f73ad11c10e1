"""The OpenAPI 3 document each ingress serves at `/openapi.json`: its routes, their parameters,
responses and errors.

Ranges come from `shared/params.py` and limits from the app's own config, so the document cannot
drift from what the service enforces; tests/test_openapi.py fuzzes the live service against it
with schemathesis. The shared app's document covers every public route on the host (dedicated
endpoints as `/endpoints/{endpoint}/...`); a dedicated endpoint's covers its own routes, with its
route prefix as the server URL.
"""

from __future__ import annotations

from typing import Any

from shared.keys import KEY_PATTERN
from shared.params import CONF_RANGE, DECIMALS_RANGE, IMGSZ_RANGE, IOU_RANGE, PredictParams
from shared.ratelimit import RateLimit

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1"
# Same rule as shared/registry.py's model IDs; endpoint names are used as model-like slugs too.
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A 32x32 grey PNG, so that documentation and the fuzzer's example reach a real model.
EXAMPLE_SOURCE = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAK0lEQVR42u3NIQEAMAgAMHhqNJrQLwFuK7Csnrj04ph"
    "AIBAIBAKBQCDY8gEG7AHGQfZyaQAAAABJRU5ErkJggg=="
)
_REF = "#/components"
_JSON = "application/json"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{_REF}/{kind}/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}, **extra}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = _json(_ref("schemas", "Error"), description)
    if headers:
        response["headers"] = headers
    return response


def _integer_header(description: str, required: bool = False) -> dict[str, Any]:
    return {
        "description": description,
        "required": required,
        "schema": {"type": "integer", "minimum": 0},
    }


def _schemas() -> dict[str, Any]:
    number = {"type": "number"}
    box = {
        "type": "object",
        "required": ["x1", "y1", "x2", "y2"],
        "properties": {k: number for k in ("x1", "y1", "x2", "y2")},
    }
    corners = [f"{axis}{n}" for n in range(1, 5) for axis in ("x", "y")]
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "minLength": 1, "description": "What went wrong"},
                "requestId": {
                    "type": "string",
                    "description": "500 only: quote it when reporting the problem",
                },
            },
        },
        "Box": box,
        "Keypoint": {
            "type": "object",
            "required": ["x", "y", "conf"],
            "properties": {"x": number, "y": number, "conf": number},
        },
        "Result": {
            "type": "object",
            "description": "One detection (box; segments, keypoints or obb by task), or one "
            "class of a classification's top 5 (no box).",
            "required": ["class", "name", "confidence"],
            "properties": {
                "class": {"type": "integer", "minimum": 0},
                "name": {"type": "string"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "box": _ref("schemas", "Box"),
                "segments": {
                    "type": "array",
                    "description": "Polygon points [x, y]",
                    "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": number},
                },
                "keypoints": {"type": "array", "items": _ref("schemas", "Keypoint")},
                "obb": {
                    "type": "object",
                    "required": corners,
                    "properties": {k: number for k in corners},
                },
            },
        },
        "PredictResponse": {
            "type": "object",
            "required": ["images", "metadata"],
            "properties": {
                "images": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["shape", "results", "speed"],
                        "properties": {
                            "shape": {
                                "type": "array",
                                "description": "[height, width] of the image as sent",
                                "minItems": 2,
                                "maxItems": 2,
                                "items": {"type": "integer", "minimum": 1},
                            },
                            "results": {"type": "array", "items": _ref("schemas", "Result")},
                            "speed": {
                                "type": "object",
                                "description": "Milliseconds per stage",
                                "additionalProperties": number,
                            },
                        },
                    },
                },
                "metadata": {
                    "type": "object",
                    "required": ["imageCount", "functionTimeCall", "model", "version"],
                    "properties": {
                        "imageCount": {"type": "integer", "minimum": 1},
                        "functionTimeCall": {"type": "number", "minimum": 0},
                        "model": {"type": "string", "description": "Weights file name"},
                        "version": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        },
                        "task": {"type": "string"},
                        "classNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["models"],
            "properties": {
                "models": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "task", "file"],
                        "properties": {
                            "id": {"type": "string"},
                            "task": {"type": "string"},
                            "file": {"type": "string"},
                        },
                    },
                }
            },
        },
        "Health": {
            "type": "object",
            "required": ["healthy", "status"],
            "properties": {
                "healthy": {"type": "boolean"},
                "status": {"type": "string"},
                "latencyMs": {"type": "number", "nullable": True},
                "model": {"type": "string", "nullable": True},
                "task": {"type": "string", "nullable": True},
            },
        },
        "EndpointInfo": {
            "type": "object",
            "required": ["name", "model", "file", "task", "names", "imgsz", "device"],
            "properties": {
                "name": {"type": "string"},
                "model": {"type": "string"},
                "file": {"type": "string"},
                "task": {"type": "string"},
                "names": {"type": "array", "items": {"type": "string"}},
                "imgsz": {"type": "integer"},
                "device": {"type": "string"},
            },
        },
    }


def _predict_form(max_upload_mb: float, allow_url_sources: bool) -> dict[str, Any]:
    defaults = PredictParams()
    source = "The image as base64 or a base64 data URI"
    if allow_url_sources:
        source += ", or an http(s) URL that the server fetches"
    return {
        "type": "object",
        "description": "Exactly one of `file` or `source`, and optionally the parameters.",
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "description": f"The image (JPEG, PNG, WebP, AVIF, HEIC, JP2, TIFF, BMP, DNG, "
                f"MPO), at most {max_upload_mb:g} MB",
            },
            "source": {"type": "string", "description": source, "example": EXAMPLE_SOURCE},
            "conf": {
                "type": "number",
                "minimum": CONF_RANGE[0],
                "maximum": CONF_RANGE[1],
                "default": defaults.conf,
                "description": "Minimum confidence",
            },
            "iou": {
                "type": "number",
                "minimum": IOU_RANGE[0],
                "maximum": IOU_RANGE[1],
                "default": defaults.iou,
                "description": "NMS IoU threshold",
            },
            "imgsz": {
                "type": "integer",
                "minimum": IMGSZ_RANGE[0],
                "maximum": IMGSZ_RANGE[1],
                "default": defaults.imgsz,
                "description": "Inference size (the model's own size when omitted)",
            },
            "normalize": {
                "type": "boolean",
                "default": defaults.normalize,
                "description": "Coordinates as 0-1 fractions of the image's width and height",
            },
            "decimals": {
                "type": "integer",
                "minimum": DECIMALS_RANGE[0],
                "maximum": DECIMALS_RANGE[1],
                "default": defaults.decimals,
                "description": "Decimal places of coordinates and confidences",
            },
        },
        "additionalProperties": False,
        "oneOf": [{"required": ["file"]}, {"required": ["source"]}],
    }


def _path_param(name: str, description: str, pattern: str, example: str | None) -> dict:
    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    param = {"name": name, "in": "path", "required": True, "description": description}
    if example:
        param["example"] = example
    return {**param, "schema": schema}


def _predict_operation(
    summary: str,
    parameters: list[dict[str, Any]],
    *,
    rate_limited: bool,
    not_found: str | None,
) -> dict[str, Any]:
    limit_headers = (
        {
            "X-RateLimit-Limit": _integer_header("Requests allowed per window for this key"),
            "X-RateLimit-Remaining": _integer_header("Requests left in the current window"),
            "X-RateLimit-Reset": _integer_header("Seconds until the window has room again"),
        }
        if rate_limited
        else {}
    )
    ok = _json(_ref("schemas", "PredictResponse"), "Predictions for the image")
    if limit_headers:
        ok["headers"] = limit_headers
    responses: dict[str, Any] = {
        "200": ok,
        "400": _ref("responses", "BadRequest"),
        "401": _ref("responses", "Unauthorized"),
    }
    if not_found:
        responses["404"] = _error(not_found)
    responses["413"] = _ref("responses", "TooLarge")
    if rate_limited:
        responses["429"] = _ref("responses", "RateLimited")
    responses.update(
        {
            "500": _ref("responses", "ServerError"),
            "503": _ref("responses", "Unavailable"),
            "504": _ref("responses", "Timeout"),
        }
    )
    return {
        "post": {
            "summary": summary,
            "parameters": parameters,
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": _ref("schemas", "PredictForm"),
                        "encoding": {"file": {"contentType": "application/octet-stream"}},
                    }
                },
            },
            "responses": responses,
        }
    }


def _health_operation(dedicated: bool, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": _json(_ref("schemas", "Health"), "Serving")}
    if dedicated:
        responses["404"] = _error("No such endpoint")
        responses["503"] = _json(_ref("schemas", "Health"), "The model does not answer")
    return {
        "get": {
            "summary": "Liveness" + (": the model answers, and how fast" if dedicated else ""),
            "security": [],
            "parameters": parameters,
            "responses": responses,
        }
    }


def _info_operation(parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": "The endpoint's model: task, class names, input size, device",
            "parameters": parameters,
            "responses": {
                "200": _json(_ref("schemas", "EndpointInfo"), "The endpoint's model"),
                "401": _ref("responses", "Unauthorized"),
                "404": _error("No such endpoint"),
                "500": _ref("responses", "ServerError"),
                "503": _ref("responses", "Unavailable"),
                "504": _ref("responses", "Timeout"),
            },
        }
    }


def _dedicated_paths(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{prefix}/predict": _predict_operation(
            "Predict with this endpoint's model (no rate limit)",
            parameters,
            rate_limited=False,
            not_found="No such endpoint" if parameters else None,
        ),
        f"{prefix}/health": _health_operation(True, parameters),
        f"{prefix}/info": _info_operation(parameters),
    }


def _shared_paths(models: list[str], rate_limit: RateLimit | None) -> dict[str, Any]:
    example = models[0] if models else None
    model_id = _path_param("modelId", "A model ID from `GET /api/models`", SLUG_PATTERN, example)
    per_key = (
        f" ({rate_limit.requests} requests per {rate_limit.window_s:g} s per API key)"
        if rate_limit
        else ""
    )
    segment = r"^[^/]+$"
    endpoint = _path_param("endpoint", "A dedicated endpoint's name", SLUG_PATTERN, None)
    return {
        "/api/models": {
            "get": {
                "summary": "The models this key may use",
                "responses": {
                    "200": _json(_ref("schemas", "ModelList"), "Model IDs with task and file"),
                    "401": _ref("responses", "Unauthorized"),
                    "500": _ref("responses", "ServerError"),
                },
            }
        },
        "/api/models/{modelId}/predict": _predict_operation(
            "Predict with a registry model" + per_key,
            [model_id],
            rate_limited=rate_limit is not None,
            not_found="Model not found (unknown, or not allowed for this key)",
        ),
        "/api/models/{owner}/{project}/{modelId}/predict": _predict_operation(
            "The same, at the official SDK's model URL (owner and project are ignored)",
            [
                _path_param("owner", "Ignored", segment, "me"),
                _path_param("project", "Ignored", segment, "demo"),
                model_id,
            ],
            rate_limited=rate_limit is not None,
            not_found="Model not found (unknown, or not allowed for this key)",
        ),
        "/api/deployments/{owner}/{deployment}/predict": _predict_operation(
            "Predict with a dedicated endpoint by name, at the official SDK's deployment URL "
            "(no rate limit)",
            [
                _path_param("owner", "Ignored", segment, "me"),
                _path_param("deployment", "A dedicated endpoint's name", SLUG_PATTERN, None),
            ],
            rate_limited=False,
            not_found="Deployment not found",
        ),
        "/health": _health_operation(False, []),
        **_dedicated_paths("/endpoints/{endpoint}", [endpoint]),
    }


def document(
    mode: str,
    *,
    server_url: str = "",
    endpoint: str | None = None,
    model: str | None = None,
    models: list[str] | None = None,
    max_upload_mb: float = 10,
    rate_limit: RateLimit | None = None,
    allow_url_sources: bool = False,
) -> dict[str, Any]:
    """The document for a `shared` or `dedicated` ingress mounted at `server_url`."""
    if mode == "shared":
        title = "YOLO Endpoints: shared predict service"
        paths = _shared_paths(list(models or []), rate_limit)
    else:
        title = f"YOLO Endpoints: dedicated endpoint {endpoint} ({model})"
        paths = _dedicated_paths("", [])
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
        }
    }
    retry_after = {"Retry-After": _integer_header("Seconds to wait before retrying", required=True)}
    challenge = {
        "WWW-Authenticate": {
            "description": "The scheme wanted: Bearer",
            "required": True,
            "schema": {"type": "string"},
        }
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": API_VERSION,
            "description": "Ultralytics Platform compatible inference. Errors are always JSON "
            '`{"error": "..."}`.',
        },
        "servers": [{"url": server_url or "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"An API key: `Authorization: Bearer <key>`, key matching "
                    f"{KEY_PATTERN.pattern}",
                }
            },
            "schemas": {
                **_schemas(),
                "PredictForm": _predict_form(max_upload_mb, allow_url_sources),
            },
            "responses": {
                "BadRequest": _error(
                    "Invalid request: image, form field or parameter (the message names it)"
                ),
                "Unauthorized": _error("Missing, malformed, invalid or revoked API key", challenge),
                "TooLarge": _error(f"The image is over {max_upload_mb:g} MB"),
                "RateLimited": _error(
                    "Too many requests for this key in the window",
                    {
                        **retry_after,
                        "X-RateLimit-Limit": _integer_header("Requests allowed per window"),
                        "X-RateLimit-Remaining": _integer_header("Always 0 here"),
                        "X-RateLimit-Reset": _integer_header("Seconds until there is room"),
                    },
                ),
                "ServerError": _error("Unexpected failure: retry, quote requestId if it persists"),
                "Unavailable": _error(
                    "The model is busy (queue full) or has no ready replica: retry after "
                    "Retry-After when given",
                    {"Retry-After": _integer_header("Seconds to wait before retrying")},
                ),
                "Timeout": _error("The model gave no answer within the configured timeout"),
            },
        },
    }

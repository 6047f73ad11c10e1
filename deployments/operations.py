"""What each API operation promises: path parameters, request forms, and the reply per status.

The route table (`deployments/api_routes.py`) attaches one of these to each route; the bodies
are the models of `deployments/schemas.py`. Statuses are the ones the route can answer: 401
from the key check, 429 from the app's rate limit (`COUNTED`, only where the app has one), 404
from the gate's model check, 413/400 from the upload, and 503/504 from the model call.
"""

from __future__ import annotations

from deployments import schemas
from deployments.routes import Alternative, Counted, Form, Header, Operation, PathParam, Reply

# Same rule as shared/registry.py's model IDs; endpoint names are used as model-like slugs too.
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_SEGMENT = r"^[^/]+$"

MODEL_ID = PathParam("modelId", "A model ID from `GET /api/models`", SLUG_PATTERN, "model_id")
OWNER = PathParam(
    "owner",
    "Ignored: a key acts for its own workspace (`GET /api/account/summary` names it)",
    _SEGMENT,
    example="me",
)
PROJECT = PathParam("project", "Ignored", _SEGMENT, example="demo")
DEPLOYMENT = PathParam("deployment", "A deployment's slug", SLUG_PATTERN)
ENDPOINT = PathParam("endpoint", "A dedicated endpoint's name", SLUG_PATTERN)

_LIMIT = Header("X-RateLimit-Limit", "Requests allowed per window for this key")
_RESET = Header("X-RateLimit-Reset", "Seconds until the window has room again")

BAD_REQUEST = Reply(
    schemas.Error,
    "Invalid request: image, form field or parameter (the message names it)",
    name="BadRequest",
)
UNAUTHORIZED = Reply(
    schemas.Error,
    "Missing, malformed, invalid or revoked API key",
    (Header("WWW-Authenticate", "The scheme wanted: Bearer", required=True, kind="string"),),
    name="Unauthorized",
)
TOO_LARGE = Reply(schemas.Error, "The image is over {max_upload_mb} MB", name="TooLarge")
RATE_LIMITED = Reply(
    schemas.Error,
    "Too many requests for this key in the window",
    (
        Header("Retry-After", "Seconds to wait before retrying", required=True),
        _LIMIT,
        Header("X-RateLimit-Remaining", "Always 0 here"),
        _RESET,
    ),
    name="RateLimited",
)
SERVER_ERROR = Reply(
    schemas.Error, "Unexpected failure: retry, quote requestId if it persists", name="ServerError"
)
UNAVAILABLE = Reply(
    schemas.Error,
    "The model is busy (queue full) or has no ready replica: retry after Retry-After when given",
    (Header("Retry-After", "Seconds to wait before retrying"),),
    name="Unavailable",
)
TIMEOUT = Reply(
    schemas.Error, "The model gave no answer within the configured timeout", name="Timeout"
)
COUNTED = Counted(
    RATE_LIMITED,
    (_LIMIT, Header("X-RateLimit-Remaining", "Requests left in the current window"), _RESET),
)
_MODEL_CALL = {500: SERVER_ERROR, 503: UNAVAILABLE, 504: TIMEOUT}

_PREDICT_FORMS = (
    Form("multipart/form-data", schemas.PredictForm),
    # What the official SDK sends for a `source` without a `file`.
    Form("application/x-www-form-urlencoded", schemas.SourceForm),
)
_PREDICTIONS = Reply(
    schemas.PredictResponse,
    "Predictions for the images (or the video's frames); with `Accept: application/x-ndjson` "
    "one line per image or frame as each is ready, then the metadata; with `Accept: "
    "image/jpeg`, `image/png` or `image/webp` the one image sent, its results drawn on it",
    (Header("Server-Timing", "Where the time went, in ms", kind="string"),),
    alternatives=(
        Alternative("application/x-ndjson", schemas.PredictLine),
        Alternative("image/jpeg"),
        Alternative("image/png"),
        Alternative("image/webp"),
    ),
)
NOT_ACCEPTABLE = Reply(
    schemas.Error,
    "Accept names no output offered, or an annotated image of several images or a video",
    name="NotAcceptable",
)
_MODEL_NOT_FOUND = "Model not found (unknown, or not allowed for this key)"


def _predict(
    summary: str, params: tuple[PathParam, ...], not_found: str, counted: Counted | None = None
) -> Operation:
    return Operation(
        summary,
        {
            200: _PREDICTIONS,
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
            404: Reply(schemas.Error, not_found),
            406: NOT_ACCEPTABLE,
            413: TOO_LARGE,
            **_MODEL_CALL,
        },
        params,
        _PREDICT_FORMS,
        counted=counted,
    )


# -- the shared service --------------------------------------------------------------------------
LIST_MODELS = Operation(
    "The models this key may use (counted only against a key's own rate limit)",
    {
        200: Reply(schemas.ModelList, "Model IDs with task and file"),
        401: UNAUTHORIZED,
        500: SERVER_ERROR,
    },
)
ACCOUNT_SUMMARY = Operation(
    "The calling key's workspace, as the official SDK's account summary (its owner is "
    "`username`; counted only against a key's own rate limit)",
    {
        200: Reply(schemas.AccountSummary, "The key's owner as a self-hosted account"),
        401: UNAUTHORIZED,
        500: SERVER_ERROR,
    },
)
PREDICT = _predict("Predict with a registry model", (MODEL_ID,), _MODEL_NOT_FOUND, COUNTED)
PREDICT_SDK_MODEL = _predict(
    "The same, at the official SDK's model URL (owner and project are ignored)",
    (OWNER, PROJECT, MODEL_ID),
    _MODEL_NOT_FOUND,
    COUNTED,
)
PREDICT_SDK_DEPLOYMENT = _predict(
    "Predict with a dedicated endpoint by name, at the official SDK's deployment URL "
    "(no rate limit)",
    (OWNER, DEPLOYMENT),
    "Deployment not found",
)
SERVICE_HEALTH = Operation("Liveness", {200: Reply(schemas.ServiceHealth, "Serving")}, public=True)

# -- the official SDK's deployments ---------------------------------------------------------------
# serve_config.yaml's endpoints (everyone's, read-only) and the API-created ones (their owner's).
# Counted only against a key's own rate limit, like the account summary. A deployment of
# another owner, or whose model the key may not use, answers the 404 of a missing one.
_DEPLOYMENT_NOT_FOUND = Reply(
    schemas.Error,
    "Deployment not found (unknown, another owner's, or its model not allowed for this key)",
)
_CONTROL_DOWN = Reply(
    schemas.Error,
    "The deployments control plane did not answer in time (restarting): retry after Retry-After",
    (Header("Retry-After", "Seconds to wait before retrying", required=True),),
    name="ControlPlaneDown",
)
_FORBIDDEN = Reply(
    schemas.Error,
    "The key's scope is not `deploy`, or the deployment is one of serve_config.yaml (edit that "
    "file and redeploy)",
)
_JSON_BODY = {
    413: Reply(schemas.Error, "The body is over 64 KB"),
    415: Reply(schemas.Error, "The body is not application/json"),
}
LIST_DEPLOYMENTS = Operation(
    "The deployments this key may use (its owner's and serve_config.yaml's), as the official "
    "SDK's, by slug",
    {
        200: Reply(schemas.DeploymentList, "The deployments, and how many matched"),
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        500: SERVER_ERROR,
        503: _CONTROL_DOWN,
    },
    (OWNER,),
    query=schemas.DeploymentListQuery,
)
CREATE_DEPLOYMENT = Operation(
    "Create a dedicated endpoint of a registry model at `/endpoints/{deployment}`, owned by the "
    "key's workspace (scope `deploy`). It answers at once (`creating`); retrieve it until "
    "`ready`",
    {
        201: Reply(schemas.DeploymentCreated, "Accepted: it is being created"),
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        403: _FORBIDDEN,
        404: Reply(schemas.Error, "Model not found (unknown, or not allowed for this key)"),
        409: Reply(schemas.Error, "The slug is taken (by any deployment or application)"),
        **_JSON_BODY,
        500: SERVER_ERROR,
        503: _CONTROL_DOWN,
    },
    (OWNER,),
    (Form("application/json", schemas.CreateDeploymentBody),),
)
RETRIEVE_DEPLOYMENT = Operation(
    "A deployment: status (and what it waits for), service URL, resources, metadata",
    {
        200: Reply(schemas.DeploymentDetail, "The deployment"),
        401: UNAUTHORIZED,
        404: _DEPLOYMENT_NOT_FOUND,
        500: SERVER_ERROR,
        503: _CONTROL_DOWN,
    },
    (OWNER, DEPLOYMENT),
)
UPDATE_DEPLOYMENT = Operation(
    "Change a deployment (scope `deploy`): {metadata}, {name}, or {action}: `stop` (no "
    "replicas; predictions 503), `start`, `replace` with `model` (the current model serves "
    "until the new one is ready), `resize` with `cpu` and/or `memoryGi`",
    {
        200: Reply(schemas.DeploymentUpdated, "Taken: its status now, and what happens next"),
        400: BAD_REQUEST,
        401: UNAUTHORIZED,
        403: _FORBIDDEN,
        404: Reply(
            schemas.Error,
            "Deployment not found (as for retrieve), or the model to replace with is not",
        ),
        **_JSON_BODY,
        500: SERVER_ERROR,
        503: _CONTROL_DOWN,
    },
    (OWNER, DEPLOYMENT),
    (Form("application/json", schemas.UpdateDeploymentBody),),
)
DELETE_DEPLOYMENT = Operation(
    "Delete a deployment (scope `deploy`): its routes answer 404 once this returns",
    {
        200: Reply(schemas.DeploymentDeleted, "Deleted"),
        401: UNAUTHORIZED,
        403: _FORBIDDEN,
        404: _DEPLOYMENT_NOT_FOUND,
        500: SERVER_ERROR,
        503: _CONTROL_DOWN,
    },
    (OWNER, DEPLOYMENT),
)
DEPLOYMENT_HEALTH = Operation(
    "One round trip to the deployment's model (which also starts a replica where it scaled to "
    "zero): healthy or not, and how fast; a deployment that is not ready is unhealthy",
    {
        200: Reply(schemas.DeploymentHealth, "Whether the model answered"),
        401: UNAUTHORIZED,
        404: _DEPLOYMENT_NOT_FOUND,
        500: SERVER_ERROR,
        503: _CONTROL_DOWN,
    },
    (OWNER, DEPLOYMENT),
)
_READ_ONE = {
    400: BAD_REQUEST,
    401: UNAUTHORIZED,
    404: _DEPLOYMENT_NOT_FOUND,
    500: SERVER_ERROR,
}
DEPLOYMENT_LOGS = Operation(
    "Recent log entries of the deployment's replicas, newest first, a page at a time (one with "
    "`httpRequest` per HTTP request)",
    {
        200: Reply(schemas.DeploymentLogs, "A page of entries"),
        **_READ_ONE,
        503: Reply(
            schemas.Error,
            "Ray's dashboard (which serves every node's logs) or the control plane does not answer",
            (Header("Retry-After", "Seconds to wait before retrying"),),
        ),
    },
    (OWNER, DEPLOYMENT),
    query=schemas.LogsQuery,
)
DEPLOYMENT_METRICS = Operation(
    "Requests, errors, latency, CPU, memory and replicas of the deployment, from the Prometheus "
    "server scraping Ray",
    {
        200: Reply(schemas.DeploymentMetricsReply, "The series and a summary"),
        **_READ_ONE,
        503: Reply(
            schemas.Error,
            "No Prometheus answers (or the control plane does not)",
            (Header("Retry-After", "Seconds to wait before retrying"),),
        ),
    },
    (OWNER, DEPLOYMENT),
    query=schemas.MetricsQuery,
)

# -- a dedicated endpoint ------------------------------------------------------------------------
_NOT_ALLOWED = "Model not found (not allowed for this key)"
ENDPOINT_PREDICT = _predict("Predict with this endpoint's model (no rate limit)", (), _NOT_ALLOWED)
ENDPOINT_HEALTH = Operation(
    "Liveness: the model answers, and how fast",
    {
        200: Reply(schemas.EndpointHealth, "Serving"),
        503: Reply(schemas.EndpointDown, "The model does not answer"),
    },
    public=True,
)
ENDPOINT_INFO = Operation(
    "The endpoint's model: task, class names, input size, device",
    {
        200: Reply(schemas.EndpointInfo, "The endpoint's model"),
        401: UNAUTHORIZED,
        404: Reply(schemas.Error, _NOT_ALLOWED),
        **_MODEL_CALL,
    },
)
# Where the shared host describes every dedicated endpoint under its route prefix: a name that
# is no endpoint reaches the shared app, which answers 404 (after the key check where the route
# takes a key).
UNDER_ENDPOINT_PREFIX = {
    404: Reply(schemas.Error, "No such endpoint (or not allowed for this key)"),
    503: Reply(
        schemas.Error,
        "The deployment is stopped or failed, or still starting (then with Retry-After); or, "
        "when it runs, its model is busy or has no ready replica",
        (Header("Retry-After", "Seconds to wait before retrying"),),
    ),
}

# -- both ----------------------------------------------------------------------------------------
DOCUMENT = Operation(
    "This document", {200: Reply(schemas.OpenApiDocument, "OpenAPI 3.1 document")}, public=True
)

"""The official SDK's deployments API on the shared app: list, create, retrieve, update, delete,
health and predict, as its `resources/deployments.py` calls them and its `types.py` reads them.

The ingress's handlers for these routes (a mixin of `IngressApp`): HTTP and keys here, the
records and Serve in the control plane (deployments/control_plane.py), which these ask through
its handle. Rules on every route naming a deployment, in this order: the key (401), its own
rate limit (429), the deployment (404 when it is missing, another owner's, or its model not
allowed for the key: the same answer), then for changes the key's scope (403 without
`deploy`) and the deployment's kind (403 for an endpoint of serve_config.yaml).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from ray.exceptions import ActorUnavailableError, RayActorError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deployments.control_plane import DELETE_WAIT_S, Change, Create, Done, Refusal
from deployments.gate import (
    DEDICATED_ROUTE,
    DEPLOYMENTS_ROUTE,
    FORWARDED_ROUTE,
    Admission,
    RouteRules,
)
from deployments.schemas import (
    METADATA_BYTES,
    ActionChange,
    CreateDeploymentBody,
    DeploymentListQuery,
    LogsQuery,
    MetadataChange,
    MetricsQuery,
    NameChange,
    Query,
)
from shared import deployment_metrics, log_entries
from shared.cached_probe import CachedProbe
from shared.errors import ApiError, bad_request
from shared.keys import KeyRecord
from shared.lifecycle import DeploymentView

if TYPE_CHECKING:
    from deployments.ingress import IngressApp

logger = logging.getLogger("ray.serve")

# The SDK requires a data region of us, eu or ap at the top level: "us", the Platform's default
# (the data stays on this server whatever it says). A deployment's own region is free text.
SDK_REGION = "us"
CONFIG_REGION = "self-hosted"
BODY_BYTES = 64 * 1024  # a create or update body; its metadata is bounded again on its own
QueryModel = TypeVar("QueryModel", bound=Query)
NEEDS_DEPLOY_SCOPE = (
    "This key may not change deployments: that needs a key with scope 'deploy' "
    "(yolo-endpoints keys create NAME --scope deploy)"
)
_SHOWN = 24  # how much of a bad query value to echo back
# How long the control plane may take: a read answers from memory; a change waits for Serve
# (a delete up to control_plane.DELETE_WAIT_S for the application to go). Both within the
# proxy's request_timeout_s (60 s in serve_config.yaml).
READ_TIMEOUT_S = 10.0
CHANGE_TIMEOUT_S = DELETE_WAIT_S + 20.0
LOGS_DOWN = "Logs unavailable: Ray's dashboard does not answer, retry shortly"
# Log and metrics reads at once per ingress replica, and how long one waits for its turn.
_READS = asyncio.Semaphore(2)
READ_WAIT_S = 10.0
CONTROL_DOWN = "Deployments unavailable: the control plane is not answering, retry shortly"


class DeploymentRoutes:
    """The handlers; `self` is the shared app's IngressApp (its gate, registry and handles)."""

    async def list_deployments(self: IngressApp, request: Request) -> Response:
        admission = await self._admit(request, DEPLOYMENTS_ROUTE)
        status, model, limit = _list_query(request)
        items = [
            self._deployment_item(request, admission.key, view)
            for view in await _ask(self.control.views.remote())
            if _visible(admission.key, view)
        ]
        if status is not None:
            items = [item for item in items if item["status"] == status]
        if model is not None:
            items = [item for item in items if item.get("model") == model]
        body = {"deployments": items[:limit], "total": len(items), "region": SDK_REGION}
        return self._json(admission, body)

    async def create_deployment(self: IngressApp, request: Request) -> Response:
        admission = await self._admit(request, DEPLOYMENTS_ROUTE)
        _require_deploy_scope(admission.key)
        body = _parse(CreateDeploymentBody, await _json_body(request))
        # An unknown model and one the key may not use answer alike, as on every route.
        if body.model not in self.registry or not admission.key.allows(body.model):
            raise ApiError(404, f"Model not found: {body.model}")
        outcome = await _change_by(
            self.control.create.remote,
            Create(
                owner=admission.key.owner,
                slug=body.deployment,
                name=body.name,
                project=body.project,
                model=body.model,
                region=body.region,
                cpu=body.cpu,
                memory_gi=body.memoryGi,
            ),
        )
        done = _done(outcome)
        created = {
            "id": done.view.slug,
            "deployment": done.view.slug,
            "status": "creating",
            "message": done.message,
            "region": body.region,
        }
        return JSONResponse(created, status_code=201, headers=admission.headers)

    async def retrieve_deployment(self: IngressApp, request: Request) -> Response:
        admission, view = await self._named_deployment(request)
        item = self._deployment_item(request, admission.key, view)
        body = {"deployment": {**item, "metadata": view.metadata}, "region": SDK_REGION}
        return self._json(admission, body)

    async def update_deployment(self: IngressApp, request: Request) -> Response:
        admission, view = await self._named_deployment(request)
        _require_deploy_scope(admission.key)
        change = _change(await _json_body(request))
        if change.model is not None and (
            change.model not in self.registry or not admission.key.allows(change.model)
        ):
            raise ApiError(404, f"Model not found: {change.model}")
        update = self.control.update.remote
        done = _done(await _change_by(update, admission.key.owner, view.slug, change))
        body = {
            "success": True,
            "status": done.view.status,
            "message": done.message,
            "deployment": done.view.slug,
        }
        return self._json(admission, body)

    async def delete_deployment(self: IngressApp, request: Request) -> Response:
        admission, view = await self._named_deployment(request)
        _require_deploy_scope(admission.key)
        _done(await _change_by(self.control.delete.remote, admission.key.owner, view.slug))
        self.deployment_probes.pop(view.slug, None)
        return self._json(admission, {"success": True})

    async def deployment_health(self: IngressApp, request: Request) -> Response:
        """As the endpoint's own /health, one model round trip per `health_ttl_s` per endpoint
        and replica; answered 200 either way, as the SDK reads the body of a 2xx only."""
        from deployments.ingress import ping_model

        admission, view = await self._named_deployment(request)
        if view.status != "ready":
            error = _not_serving(view)
            body = {"healthy": False, "status": error.status, "latencyMs": 0.0}
            return self._json(admission, {**body, "error": error.message})
        probe = self.deployment_probes.get(view.slug)
        if probe is None:
            model, timeout_s = self.model_handle(view.slug), self.config.model_timeout_s
            probe = CachedProbe(lambda: ping_model(model, timeout_s), self.config.health_ttl_s)
            self.deployment_probes[view.slug] = probe
        ping = await probe.get()
        body: dict[str, Any] = {
            "healthy": ping.error is None,
            "status": ping.error.status if ping.error else 200,
            "latencyMs": ping.latency_ms,
        }
        if ping.error is not None:
            body["error"] = ping.error.message
        return self._json(admission, body)

    async def deployment_logs(self: IngressApp, request: Request) -> Response:
        """Recent entries of the deployment's replicas, newest first, a page at a time."""
        from deployments import replica_logs

        admission, view = await self._named_deployment(request)
        severities, limit, token = _logs_query(request)
        # A slug deleted and created again (by anyone) finds the old replicas' files too.
        since_ns = int(view.created_at_s * 1e9) if view.managed else 0
        async with _reading(LOGS_DOWN):
            try:
                entries = await asyncio.to_thread(replica_logs.read, view.slug)
            except Exception as exc:  # Ray's dashboard unreachable: the rest of the API goes on
                logger.warning("logs of %s unavailable: %s", view.slug, exc)
                raise ApiError(503, LOGS_DOWN, {"Retry-After": "5"}) from exc
        entries = [e for e in entries if e.time_ns >= since_ns]
        try:
            shown, next_token = log_entries.page(entries, severities, limit, token)
        except log_entries.BadPageToken:
            raise bad_request("Invalid 'pageToken': not one this server gave") from None
        body: dict[str, Any] = {"entries": [e.wire() for e in shown]}
        if next_token:
            body["nextPageToken"] = next_token
        return self._json(admission, body)

    async def deployment_metrics(self: IngressApp, request: Request) -> Response:
        """Requests, errors, latency, CPU, memory and replicas over a range, from Prometheus."""
        admission, view = await self._named_deployment(request)
        window, overview, sparkline = _metrics_query(request)
        url = getattr(self.config, "prometheus_url", None)
        if not url:
            raise ApiError(503, "Metrics unavailable: this server has no prometheus_url")
        target = deployment_metrics.Target(view.slug, view.cpu, view.memory_gi)
        try:
            async with _reading("Metrics unavailable: too many metrics reads at once"):
                body = await asyncio.to_thread(
                    deployment_metrics.collect,
                    url,
                    target,
                    view.region or CONFIG_REGION,
                    window,
                    overview=overview,
                    sparkline=sparkline,
                    now=time.time(),
                    # A slug deleted and created again must not show the old one's traffic.
                    since=view.created_at_s if view.managed else None,
                )
        except deployment_metrics.PrometheusUnavailable as exc:
            logger.warning("metrics of %s unavailable: %s", view.slug, exc)
            raise ApiError(
                503,
                f"Metrics unavailable: Prometheus at {url} does not answer",
                {"Retry-After": "30"},
            ) from exc
        return self._json(admission, body)

    async def predict_forwarded(self: IngressApp, request: Request) -> Response:
        """`/api/deployments/{owner}/{deployment}/predict`: the dedicated endpoint by name."""
        admission, view = await self._named_deployment(request)
        if view.status != "ready":
            raise _not_serving(view)
        spec = self.registry.get(view.model_id or "")
        if spec is None:  # its model left the registry since it was deployed
            raise ApiError(
                503, f"Deployment '{view.slug}' serves a model this server no longer has"
            )
        return await self._predict(
            request, admission, spec, self.model_handle(view.slug), video=True
        )

    async def missing_endpoint(self: IngressApp, request: Request) -> Response:
        """`/endpoints/{name}/predict` or `/info` that Serve routed here: no application runs
        under that prefix. A deployment that is stopped, starting or failed says so (503); one
        that does not exist, or that the key may not use, is the route's 404."""
        self.keys.authenticate(request.headers.get("authorization"))
        view = await _ask(self.control.view.remote(request.path_params["name"]))
        admission = await self._admit_deployment(request, view, DEDICATED_ROUTE)
        assert view is not None
        error = _not_serving(view)
        raise ApiError(error.status, error.message, {**admission.headers, **error.headers})

    async def _named_deployment(
        self: IngressApp, request: Request
    ) -> tuple[Admission, DeploymentView]:
        """The admission and deployment of a route naming `{deployment}`."""
        # The key first, so that an unauthenticated caller costs no lookup.
        self.keys.authenticate(request.headers.get("authorization"))
        view = await _ask(self.control.view.remote(request.path_params["deployment"]))
        admission = await self._admit_deployment(request, view, FORWARDED_ROUTE)
        return admission, view

    async def _admit_deployment(
        self: IngressApp, request: Request, view: DeploymentView | None, rules: RouteRules
    ) -> Admission:
        """The gate's 404 for a missing deployment, another owner's, or one whose model the key
        may not use (one whose model is not known yet: only for a key that may use every one)."""
        model_id = view.model_id if view else None
        if view is not None and model_id is None:
            model_id = "*"  # no KeyRecord restricts to "*": only unrestricted keys pass
        return await self._admit(request, rules, model_id, owner=view.owner if view else None)

    def _deployment_item(
        self: IngressApp, request: Request, key: KeyRecord, view: DeploymentView
    ) -> dict[str, Any]:
        """A deployment as the SDK's (schemas.DeploymentSummary): optional keys only where
        this server knows the answer."""
        spec = self.registry.get(view.model_id) if view.model_id else None
        item: dict[str, Any] = {"id": view.slug, "owner": view.owner or key.owner}
        if view.project:
            item["project"] = view.project
        if view.model_id:
            item["model"] = view.model_id
        if spec is not None:
            item["task"] = spec.task
        item.update(deployment=view.slug, name=view.name, status=view.status)
        if view.status_message:
            item["statusMessage"] = view.status_message
        item["region"] = view.region or CONFIG_REGION
        # The host the caller reached this server by (base_url follows its Host header).
        item["serviceUrl"] = str(request.base_url).rstrip("/") + view.route_prefix
        item["resources"] = {
            "cpu": view.cpu,
            "memoryGi": view.memory_gi,
            "minInstances": view.min_instances,
            "maxInstances": view.max_instances,
        }
        if view.status == "ready" and view.deployed_at_s:
            item["deployedAt"] = _iso(view.deployed_at_s)
        item.update(createdAt=_iso(view.created_at_s), updatedAt=_iso(view.updated_at_s))
        return item


@contextlib.asynccontextmanager
async def _reading(busy: str) -> AsyncIterator[None]:
    """One of a few log or metrics reads at a time per ingress replica: each holds a worker
    thread for seconds, and the image decodes of predictions need those threads."""
    try:
        await asyncio.wait_for(_READS.acquire(), READ_WAIT_S)
    except TimeoutError:
        raise ApiError(503, busy, {"Retry-After": "5"}) from None
    try:
        yield
    finally:
        _READS.release()


async def _result(response: Awaitable[Any]) -> Any:
    return await response


async def _ask(response: Awaitable[Any], timeout_s: float | None = None) -> Any:
    """The control plane's answer to a read; a 503 with Retry-After when it has none in time
    (its replica restarting, or not placed), never a request held until the proxy gives up."""
    try:
        return await asyncio.wait_for(_result(response), timeout_s or READ_TIMEOUT_S)
    except (TimeoutError, RayActorError, ActorUnavailableError) as exc:
        logger.warning("deployments control plane did not answer: %s", type(exc).__name__)
        raise ApiError(503, CONTROL_DOWN, {"Retry-After": "5"}) from exc


async def _change_by(method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """A change sent to the control plane, which runs it shielded on its side: a caller who
    stops waiting (here, or the client) does not cut it short."""
    return await _ask(method(*args), CHANGE_TIMEOUT_S)


def _visible(key: KeyRecord, view: DeploymentView) -> bool:
    """Whether a key sees a deployment in a listing: its owner's (or everyone's), with a
    model it may use (one whose model is not known yet: a key that may use every model)."""
    if not view.visible_to(key.owner):
        return False
    if view.model_id is None:
        return key.models is None
    return key.allows(view.model_id)


def _require_deploy_scope(key: KeyRecord) -> None:
    if key.scope != "deploy":
        raise ApiError(403, NEEDS_DEPLOY_SCOPE)


def _done(outcome: Done | Refusal) -> Done:
    if isinstance(outcome, Refusal):
        raise ApiError(outcome.status, outcome.error)
    return outcome


def _not_serving(view: DeploymentView) -> ApiError:
    """Why a deployment's routes do not predict right now: a 503 each, a Retry-After where it
    is on its way."""
    slug = view.slug
    if view.status in ("stopped", "stopping"):
        return ApiError(
            503, f'Deployment \'{slug}\' is stopped: start it (PATCH {{"action": "start"}})'
        )
    if view.status == "failed":
        return ApiError(503, f"Deployment '{slug}' failed: {view.status_message}")
    detail = f": {view.status_message}" if view.status_message else ""
    return ApiError(503, f"Deployment '{slug}' is {view.status}{detail}", {"Retry-After": "5"})


async def _json_body(request: Request) -> Any:
    if "json" not in request.headers.get("content-type", "application/json"):
        raise ApiError(415, "Send the body as application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_BYTES:
            raise ApiError(413, f"The body is over {BODY_BYTES // 1024} KB")
    try:
        # NaN and infinities are no JSON (the answers could never be written back), and an
        # integer of thousands of digits is refused by Python itself (ValueError).
        return json.loads(body, parse_constant=_no_constant, parse_float=_finite)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad_request("Malformed JSON body") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _parse(model: Any, data: Any) -> Any:
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object")
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as exc:
        raise bad_request(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "missing":
        return f"Missing field '{where}'"
    if error["type"] == "extra_forbidden":
        return f"Unknown field '{where}'"
    if error["type"] == "literal_error":
        return f"Invalid '{where}': {error['msg'].replace('Input should be', 'must be')}"
    return f"Invalid '{where}': {error['msg']}"


def _change(data: Any) -> Change:
    """A PATCH body as one of its three forms: {metadata}, {name} or {action, ...}."""
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object")
    if "action" in data:
        action = _parse(ActionChange, data)
        return _action(action)
    if "metadata" in data:
        metadata = _parse(MetadataChange, data).metadata
        if len(json.dumps(metadata)) > METADATA_BYTES:
            raise bad_request(f"Invalid 'metadata': over {METADATA_BYTES // 1024} KB as JSON")
        return Change(metadata=metadata)
    if "name" in data:
        return Change(name=_parse(NameChange, data).name)
    raise bad_request("The body must be {metadata}, {name} or {action: start|stop|replace|resize}")


def _action(action: ActionChange) -> Change:
    given = action.model_dump(exclude_unset=True)
    if action.action == "camera":
        raise bad_request("The camera action is not supported on this server")
    if action.action == "replace" and "model" not in given:
        raise bad_request("Missing field 'model': replace needs the model to roll out")
    if action.action == "resize" and not {"cpu", "memoryGi"} & set(given):
        raise bad_request("Missing field 'cpu' or 'memoryGi': resize needs a new size")
    extra = set(given) - {"action", *_ACTION_FIELDS[action.action]}
    if extra:
        raise bad_request(f"Unknown field '{sorted(extra)[0]}' for action '{action.action}'")
    return Change(
        action=action.action,
        model=given.get("model"),
        project=given.get("project"),
        cpu=given.get("cpu"),
        memory_gi=given.get("memoryGi"),
    )


_ACTION_FIELDS = {
    "start": (),
    "stop": (),
    "replace": ("model", "project"),
    "resize": ("cpu", "memoryGi"),
}


def _query(request: Request, model: type[QueryModel]) -> QueryModel:
    """The route's query string as its model (schemas.py), or a 400 naming the parameter."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise bad_request(_first_error(exc)) from None


def _logs_query(request: Request) -> tuple[frozenset[str] | None, int, str | None]:
    """The logs' `severity` (comma-separated SDK severities), `limit` and `pageToken`."""
    query = _query(request, LogsQuery)
    severities = None
    if query.severity is not None:
        given = {part.upper() for part in query.severity.split(",")}
        if given - set(log_entries.SEVERITIES):
            raise bad_request(
                f"Invalid 'severity': use {', '.join(log_entries.SEVERITIES)}, "
                f"{_got(query.severity)}"
            )
        severities = frozenset(given)
    return severities, query.limit, query.pageToken or None


def _metrics_query(request: Request) -> tuple[deployment_metrics.MetricsRange, bool, bool]:
    """The metrics' `range` (default 24h), `view=overview` and `sparkline=true|false`."""
    query = _query(request, MetricsQuery)
    return query.range, query.view == "overview", query.sparkline == "true"


def _list_query(request: Request) -> tuple[str | None, str | None, int]:
    """The listing's `status`, `model` and `limit` (400 for a bad one)."""
    query = _query(request, DeploymentListQuery)
    # The SDK documents `model` as a Platform "project/model": registry models have no project.
    model = query.model.rsplit("/", 1)[-1] if query.model else None
    return query.status, model, query.limit


def _got(raw: str) -> str:
    shown = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
    return f"got {shown!r}"


def _iso(seconds: float) -> str:
    """Unix seconds as the Platform writes times: ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

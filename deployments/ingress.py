"""The HTTP ingress: auth, limits, upload decoding, parameters, and the spec's JSON.

It never imports torch: images go to the model deployment as numpy arrays through a handle, and
`Prediction` dicts of arrays come back to be shaped here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, get_args

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from deployments import model_calls, openapi
from deployments.api_routes import api_routes, documented_routes
from deployments.browser import NoSniffMiddleware, add_cors
from deployments.config import AppArgs, EndpointArgs, SharedArgs
from deployments.directory import Endpoint, EndpointDirectory
from deployments.gate import (
    ACCOUNT_ROUTE,
    DEDICATED_INFO,
    DEDICATED_ROUTE,
    DEPLOYMENTS_ROUTE,
    FORWARDED_ROUTE,
    SHARED_LISTING,
    SHARED_ROUTE,
    Admission,
    Gate,
    RouteRules,
    attach_limit_headers,
    limit_headers,
)
from deployments.metrics import IngressMetrics, RequestMetricsMiddleware
from deployments.pages import PredictPages
from deployments.response_check import add_response_check
from deployments.schemas import DeploymentStatus
from deployments.uploads import UrlSources, read_upload
from shared.cached_probe import CachedProbe
from shared.errors import ApiError, bad_request
from shared.images import decode_image, decode_peak_bytes
from shared.keys import KeyRecord, KeyRing
from shared.memory_budget import MB, MemoryBudget
from shared.params import parse_params
from shared.registry import PROJECT_ROOT, ModelSpec, is_valid_model_id, load_registry
from shared.results import shape_response, shape_results
from shared.timing import PhaseTimer

logger = logging.getLogger("ray.serve")

# The official SDK's deployments, as this server answers them (deployments/schemas.py). The SDK
# requires a data region of us, eu or ap at the top level: "us", the Platform's default (the
# data stays on this server whatever it says). A deployment's own region is free text there.
SDK_REGION = "us"
ENDPOINT_REGION = "self-hosted"
LIST_LIMIT = (1, 100)
LIST_DEFAULT = 20
DEPLOYMENT_STATUSES: tuple[str, ...] = get_args(DeploymentStatus)
MANAGED = "Deployment managed by serve_config.yaml: edit that file and redeploy"
NOT_CREATABLE = (
    "Creating deployments through the API is not supported yet: add an application to "
    "serve_config.yaml"
)
_SHOWN = 24  # how much of a bad query value to echo back


class Ping(NamedTuple):
    """One round trip to a dedicated endpoint's model: what both health answers are made of."""

    info: dict[str, Any] | None  # the model's description; None: it did not answer
    latency_ms: float  # until the answer, or until the failure
    error: ApiError | None


async def ping_model(model: DeploymentHandle, timeout_s: float) -> Ping:
    """Ask the model to describe itself: it answers (info) or the call fails (error)."""
    started = time.perf_counter()
    try:
        info = await model_calls.describe(model, None, timeout_s)
    except ApiError as exc:
        return Ping(None, round((time.perf_counter() - started) * 1000, 2), exc)
    return Ping(info, round((time.perf_counter() - started) * 1000, 2), None)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class IngressApp:
    """The ingress itself, plain Python: Serve runs it as the `Ingress` deployment below, and
    tests build it in-process over stand-in handles (tests/unit/test_ingress_routes.py)."""

    def __init__(
        self,
        model: DeploymentHandle,
        config: AppArgs,
        limiter: DeploymentHandle | None = None,
    ):
        self.config = config
        self.model = model
        dedicated = config if isinstance(config, EndpointArgs) else None
        self.endpoint_name = dedicated.name if dedicated else None
        self.model_id = dedicated.model if dedicated else None  # a dedicated endpoint's model
        self.registry: dict[str, ModelSpec] = load_registry(
            _resolve(self.config.registry) if self.config.registry else None
        )
        self.keys = KeyRing(_resolve(self.config.keys_file))
        if limiter is None and dedicated and dedicated.limiter_app:
            # Without checking that the app exists: a dedicated app may come up first, and
            # until the limiter answers, keys with their own limit are admitted uncounted.
            limiter = serve.get_deployment_handle(
                "Limiter", app_name=dedicated.limiter_app, _check_exists=False
            )
        shared = config if isinstance(config, SharedArgs) else None
        self.rate_limit = shared.rate_limit.limit() if shared else None
        self.gate = Gate(self.keys, limiter, self.rate_limit.requests if self.rate_limit else None)
        self.decode_budget = MemoryBudget(
            int(self.config.decode_memory_mb * MB), self.config.decode_wait_s
        )
        self.health_probe = CachedProbe(self._check_health, self.config.health_ttl_s)
        self.limit_bytes = int(self.config.max_upload_mb * MB)
        self.url_sources = UrlSources(self.config.allow_url_sources, self.config.url_timeout_s)
        self.endpoints = EndpointDirectory()  # tests replace it with one over fake details
        self.deployment_probes: dict[str, CachedProbe[Ping]] = {}  # endpoint name -> its probe
        self.metrics = IngressMetrics()
        self._openapi: dict[str, dict[str, Any]] = {}  # root path -> document

    # -- the ASGI app, built per replica so routes can use this instance ---------------------
    def __serve_build_asgi_app__(self) -> Starlette:
        routes = api_routes(self.config.mode, self)
        # The Predict page, its assets and example images (relative URLs: same files at both).
        routes += PredictPages(
            self.config.mode,
            endpoint=self.endpoint_name,
            model=self.model_id,
            max_upload_mb=self.config.max_upload_mb,
        ).routes()
        app = Starlette(
            routes=routes,
            exception_handlers={
                ApiError: self._api_error,
                HTTPException: self._http_error,
                Exception: self._unexpected,
            },
        )
        # Innermost, so that CORS, nosniff and the metrics see the 500 a mismatch becomes.
        add_response_check(app)
        add_cors(app, self.config.cors_origins)
        app.add_middleware(NoSniffMiddleware)
        # Outermost, so it records the status of every response, whatever produced it.
        app.add_middleware(RequestMetricsMiddleware, metrics=self.metrics)
        return app

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, {**limit_headers(request), **exc.headers})

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, exc.detail)
        # Starlette's own headers too: a 405 names the allowed methods in `Allow`.
        headers = {**(exc.headers or {}), **limit_headers(request)}
        if exc.status_code == 405:
            # A path served by one route per method (each its own operation): Allow names the
            # methods of them all, not only of the first one Starlette tried.
            allowed = {
                method
                for route in request.app.routes
                if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
                for method in route.methods or ()
            }
            headers["Allow"] = ", ".join(sorted(allowed)) or headers.get("Allow", "")
        return error_response(exc.status_code, message, headers)

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        request_id = uuid.uuid4().hex[:12]
        logger.exception("request %s failed", request_id, exc_info=exc)
        return JSONResponse(
            {"error": "Server error: please retry", "requestId": request_id},
            status_code=500,
            headers=limit_headers(request),
        )

    # -- routes -------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        if self.config.mode == "shared":
            return JSONResponse({"healthy": True, "status": "ok"})
        # One model round trip per `health_ttl_s` per replica, whatever the callers' rate: a
        # flood of public health checks must not queue ahead of predictions.
        body, status = await self.health_probe.get()
        return JSONResponse(body, status_code=status)

    async def _check_health(self) -> tuple[dict[str, Any], int]:
        """A dedicated endpoint is healthy when its model answers; latencyMs is that trip."""
        ping = await ping_model(self.model, self.config.model_timeout_s)
        if ping.info is None:
            message = ping.error.message if ping.error else "Model not ready"
            unhealthy = {"healthy": False, "status": message, "latencyMs": None}
            return {**unhealthy, "model": self.model_id, "task": None}, 503
        healthy = {"healthy": True, "status": "ready", "latencyMs": ping.latency_ms}
        return {**healthy, "model": self.model_id, "task": ping.info["task"]}, 200

    async def info(self, request: Request) -> Response:
        admission = await self._admit(request, DEDICATED_INFO, self.model_id)
        info = await model_calls.describe(self.model, None, self.config.model_timeout_s)
        return self._json(
            admission,
            {
                "name": self.endpoint_name,
                "model": self.model_id,
                "file": info["model"],
                "task": info["task"],
                "names": info["names"],
                "imgsz": info["imgsz"],
                "device": info["device"],
            },
        )

    async def api_description(self, request: Request) -> Response:
        # Serve mounts an app under its route prefix (root_path): that is the document's server.
        root = request.scope.get("root_path", "")
        if root not in self._openapi:
            site = openapi.site(
                self.config.mode,
                server_url=root,
                endpoint=self.endpoint_name,
                model=self.model_id,
                models=list(self.registry),
                max_upload_mb=self.config.max_upload_mb,
                rate_limit=self.rate_limit,
                allow_url_sources=self.config.allow_url_sources,
            )
            # The app's real route table, as built.
            routes = documented_routes(self.config.mode, self, request.app.routes)
            self._openapi[root] = openapi.document(routes, site)
        return JSONResponse(self._openapi[root])

    async def list_models(self, request: Request) -> Response:
        admission = await self._admit(request, SHARED_LISTING)
        models = [
            {"id": s.id, "task": s.task, "file": s.file}
            for s in self.registry.values()
            if admission.key.allows(s.id)
        ]
        return self._json(admission, {"models": models})

    async def account_summary(self, request: Request) -> Response:
        """The key's owner as the official SDK's account (schemas.AccountSummary says why the
        rest is fixed): what its CLI fills an omitted owner with."""
        admission = await self._admit(request, ACCOUNT_ROUTE)
        owner = admission.key.owner
        return self._json(
            admission,
            {
                "username": owner,
                "name": owner,
                "accountType": "personal",
                "plan": "free",
                "creditsCents": 0,
                "counts": {"projects": 0, "datasets": 0, "models": 0},
                "teams": [],
            },
        )

    async def predict_shared(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        known = model_id if is_valid_model_id(model_id) and model_id in self.registry else None
        # Admitted before anything else: a rejected request reads no upload and reaches no model.
        admission = await self._admit(request, SHARED_ROUTE, known)
        return await self._predict(request, admission, self.registry[model_id])

    async def predict_dedicated(self, request: Request) -> Response:
        assert self.model_id is not None
        admission = await self._admit(request, DEDICATED_ROUTE, self.model_id)
        return await self._predict(request, admission, self.registry[self.model_id])

    async def predict_forwarded(self, request: Request) -> Response:
        """`/api/deployments/{owner}/{name}/predict`: the dedicated endpoint `name`."""
        # The key first, so that an unauthenticated caller costs no lookup.
        self.keys.authenticate(request.headers.get("authorization"))
        target = await self.endpoints.lookup(request.path_params["deployment"])
        admission = await self._admit(request, FORWARDED_ROUTE, target[1] if target else None)
        assert target is not None
        handle, model_id = target
        return await self._predict(request, admission, self.registry[model_id], handle)

    # -- the official SDK's deployments: the dedicated endpoints, read-only ------------------
    async def list_deployments(self, request: Request) -> Response:
        admission = await self._admit(request, DEPLOYMENTS_ROUTE)
        status, model, limit = _list_query(request)
        items = [
            self._deployment_item(request, admission.key.owner, endpoint)
            for endpoint in await self.endpoints.endpoints()
            if _visible(admission.key, endpoint)
        ]
        if status is not None:
            items = [item for item in items if item["status"] == status]
        if model is not None:
            items = [item for item in items if item.get("model") == model]
        body = {"deployments": items[:limit], "total": len(items), "region": SDK_REGION}
        return self._json(admission, body)

    async def create_deployment(self, request: Request) -> Response:
        await self._admit(request, DEPLOYMENTS_ROUTE)  # 401 (or a key's own 429) first
        raise ApiError(501, NOT_CREATABLE)

    async def retrieve_deployment(self, request: Request) -> Response:
        admission, endpoint = await self._named_deployment(request)
        item = self._deployment_item(request, admission.key.owner, endpoint)
        body = {"deployment": {**item, "metadata": {}}, "region": SDK_REGION}
        return self._json(admission, body)

    async def manage_deployment(self, request: Request) -> Response:
        """PATCH and DELETE: every endpoint here is an application of serve_config.yaml, which
        a redeploy of that file would bring back as it was."""
        await self._named_deployment(request)
        raise ApiError(403, MANAGED)

    async def deployment_health(self, request: Request) -> Response:
        """As the endpoint's own /health, one model round trip per `health_ttl_s` per endpoint
        and replica; answered 200 either way, as the SDK reads the body of a 2xx only."""
        admission, endpoint = await self._named_deployment(request)
        probe = self.deployment_probes.get(endpoint.name)
        if probe is None:
            model, timeout_s = self.endpoints.handle(endpoint.name), self.config.model_timeout_s
            probe = CachedProbe(lambda: ping_model(model, timeout_s), self.config.health_ttl_s)
            self.deployment_probes[endpoint.name] = probe
        ping = await probe.get()
        body: dict[str, Any] = {
            "healthy": ping.error is None,
            "status": ping.error.status if ping.error else 200,
            "latencyMs": ping.latency_ms,
        }
        if ping.error is not None:
            body["error"] = ping.error.message
        return self._json(admission, body)

    async def deployment_logs(self, request: Request) -> Response:
        await self._named_deployment(request)
        raise ApiError(
            501, "Deployment logs are not supported yet: Serve writes them under logs/serve/"
        )

    async def deployment_metrics(self, request: Request) -> Response:
        await self._named_deployment(request)
        raise ApiError(
            501, "Deployment metrics are not supported yet: scrape Ray's Prometheus export"
        )

    async def _named_deployment(self, request: Request) -> tuple[Admission, Endpoint]:
        """The admission and endpoint of a route naming `{deployment}`: the gate answers a
        missing one, or one whose model the key may not use, with the same 404."""
        # The key first, so that an unauthenticated caller costs no lookup.
        self.keys.authenticate(request.headers.get("authorization"))
        endpoint = await self.endpoints.find(request.path_params["deployment"])
        model_id = endpoint.model_id if endpoint else None
        admission = await self._admit(request, FORWARDED_ROUTE, model_id)
        assert endpoint is not None
        return admission, endpoint

    def _deployment_item(self, request: Request, owner: str, endpoint: Endpoint) -> dict[str, Any]:
        """An endpoint as the SDK's deployment (schemas.DeploymentSummary): optional keys only
        where this server knows the answer."""
        status, message = endpoint.platform_status()
        spec = self.registry.get(endpoint.model_id) if endpoint.model_id else None
        item: dict[str, Any] = {"id": endpoint.name, "owner": owner}
        if endpoint.model_id:
            item["model"] = endpoint.model_id
        if spec is not None:
            item["task"] = spec.task
        item.update(deployment=endpoint.name, name=endpoint.name, status=status)
        if message:
            item["statusMessage"] = message
        item["region"] = ENDPOINT_REGION
        if endpoint.route_prefix:
            # The host the caller reached this server by (base_url follows its Host header).
            item["serviceUrl"] = str(request.base_url).rstrip("/") + endpoint.route_prefix
        item["resources"] = {
            "cpu": endpoint.num_cpus,
            "memoryGi": round(endpoint.memory_bytes / 2**30, 3),
            "minInstances": endpoint.min_replicas,
            "maxInstances": endpoint.max_replicas,
        }
        # Serve keeps one time per application, its last deploy: no creation time of its own.
        deployed = _iso(endpoint.deployed_at_s)
        if status == "ready":
            item["deployedAt"] = deployed
        item.update(createdAt=deployed, updatedAt=deployed)
        return item

    async def missing_endpoint(self, request: Request) -> Response:
        await self._admit(request, DEDICATED_ROUTE, None)  # 401, 429 or the model's 404
        raise ApiError(404, DEDICATED_ROUTE.not_found)  # unreachable: no model, no admission

    async def _admit(
        self, request: Request, rules: RouteRules, model_id: str | None = None
    ) -> Admission:
        """The gate's decision for this request (ApiError otherwise), its headers attached so
        that error responses from here on carry them too."""
        admission = await self.gate.admit(request.headers.get("authorization"), rules, model_id)
        attach_limit_headers(request, admission.headers)
        return admission

    @staticmethod
    def _json(admission: Admission, body: dict[str, Any]) -> Response:
        return JSONResponse(body, headers=admission.headers)

    # -- the predict path ---------------------------------------------------------------------
    async def _predict(
        self,
        request: Request,
        admission: Admission,
        spec: ModelSpec,
        handle: DeploymentHandle | None = None,
    ) -> Response:
        timer = PhaseTimer()
        upload = await read_upload(request, self.limit_bytes, self.url_sources)
        params = parse_params(upload.fields, default_imgsz=spec.imgsz or 640)
        timer.mark("upload")
        # Classification resizes the shorter side to imgsz; the other tasks the longer one.
        side = "short" if spec.task == "classify" else "long"
        # The decode's peak memory, from the header alone, is reserved before any pixel is
        # decoded: concurrent large images wait for their share (or get a 503), never an OOM.
        # In a thread too: opening some headers (WebP, the first DNG) takes milliseconds.
        peak = await asyncio.to_thread(
            decode_peak_bytes, upload.data, target_size=params.imgsz, target_side=side
        )
        async with self.decode_budget.reserve(peak):
            # CPU work, off the event loop so other requests keep flowing. An image far larger
            # than the model's input decodes reduced (libjpeg's reduced-size decoding for
            # JPEGs); shape_results maps results back to the original's pixels.
            image = await asyncio.to_thread(
                decode_image, upload.data, target_size=params.imgsz, target_side=side
            )
        self.metrics.image_decoded(image.format, timer.mark("decode"))
        prediction = await model_calls.predict(
            handle or self.model, spec.id, image.array, params, self.config.model_timeout_s
        )
        timer.mark("model")
        results = shape_results(prediction, image.shape, image.array.shape[:2], params)
        body = shape_response(
            results,
            image.shape,
            prediction["speed"],
            model_file=prediction["model"],
            versions=prediction["versions"],
            elapsed_s=timer.elapsed(),
            # Fields the official SDK reads beside the spec's.
            extra_metadata={"task": prediction["task"], "classNames": list(prediction["names"])},
        )
        response = JSONResponse(body, headers=admission.headers)
        timer.mark("respond")
        # Within `model`: `replica`, the time in the model replica, of which `queue` waiting for
        # a batch and `inference` the model's own pre-process, inference and post-process.
        replica = prediction["timing"]
        response.headers["Server-Timing"] = timer.header(
            replica=replica["replica"],
            queue=replica["queue"],
            inference=sum(prediction["speed"].values()),
        )
        return response


def _visible(key: KeyRecord, endpoint: Endpoint) -> bool:
    """Whether a key sees this endpoint in a listing: it may use its model (and one whose model
    is not known yet only a key that may use every model)."""
    if endpoint.model_id is None:
        return key.models is None
    return key.allows(endpoint.model_id)


def _list_query(request: Request) -> tuple[str | None, str | None, int]:
    """The listing's `status`, `model` and `limit` (400 for a bad one)."""
    query = request.query_params
    status = query.get("status")
    if status is not None and status not in DEPLOYMENT_STATUSES:
        raise bad_request(
            f"Invalid 'status': must be one of {', '.join(DEPLOYMENT_STATUSES)}, {_got(status)}"
        )
    # The SDK documents `model` as a Platform "project/model": registry models have no project.
    model = query.get("model")
    model = model.rsplit("/", 1)[-1] if model else None
    raw = query.get("limit")
    low, high = LIST_LIMIT
    if raw is None:
        return status, model, LIST_DEFAULT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and low <= int(raw) <= high):
        raise bad_request(f"Invalid 'limit': must be an integer from {low} to {high}, {_got(raw)}")
    return status, model, int(raw)


def _got(raw: str) -> str:
    shown = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
    return f"got {shown!r}"


def _iso(seconds: float) -> str:
    """Unix seconds as the Platform writes times: ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The Serve deployment: the same class behind Serve's ASGI ingress, named as serve_config.yaml
# and the dashboards know it.
Ingress = serve.deployment(
    name="Ingress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64
)(serve.ingress()(IngressApp))

"""The HTTP ingress: auth, limits, upload decoding, parameters, and the spec's JSON.

It never imports torch: images go to the model deployment as numpy arrays through a handle, and
`Prediction` dicts of arrays come back to be shaped here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from deployments import model_calls, openapi
from deployments.api_routes import api_routes, documented_routes
from deployments.browser import NoSniffMiddleware, add_cors
from deployments.config import HEALTH_CHECK_PERIOD_S, AppArgs, EndpointArgs, SharedArgs
from deployments.deployment_routes import DeploymentRoutes
from deployments.directory import CachedHandles, model_handle
from deployments.gate import (
    ACCOUNT_ROUTE,
    DEDICATED_INFO,
    DEDICATED_ROUTE,
    SHARED_LISTING,
    SHARED_ROUTE,
    Admission,
    Gate,
    RouteRules,
    attach_limit_headers,
    limit_headers,
)
from deployments.limiter import LimiterShards
from deployments.metrics import IngressMetrics, RequestMetricsMiddleware
from deployments.pages import PredictPages
from deployments.predict_routes import PredictRoutes
from deployments.response_check import add_response_check
from deployments.uploads import UrlSources
from shared import holds
from shared.cached_probe import CachedProbe
from shared.errors import ApiError
from shared.keys import KeyRing
from shared.memory_budget import MB, MemoryBudget
from shared.registry import PROJECT_ROOT, ModelSpec, is_valid_model_id, load_registry

logger = logging.getLogger("ray.serve")


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


def _serve_app_name() -> str:
    try:
        return serve.get_replica_context().app_name
    except RayServeException:  # built in-process by the tests, outside any replica
        return ""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class IngressApp(DeploymentRoutes, PredictRoutes):
    """The ingress itself, plain Python: Serve runs it as the `Ingress` deployment below, and
    tests build it in-process over stand-in handles (tests/unit/test_ingress_routes.py)."""

    def __init__(
        self,
        model: DeploymentHandle,
        config: AppArgs,
        limiters: list[DeploymentHandle] | None = None,
        control: DeploymentHandle | None = None,
    ):
        self.config = config
        self.model = model
        dedicated = config if isinstance(config, EndpointArgs) else None
        self.endpoint_name = dedicated.name if dedicated else None
        self.model_id = dedicated.model if dedicated else None  # a dedicated endpoint's model
        # An API-created endpoint's workspace: other owners' keys get its 404 (None: everyone's).
        self.owner = dedicated.owner if dedicated else None
        self.control = control  # the shared app's deployments control plane
        # What the endpoint's public routes (its page, its document) may name: an API-created
        # endpoint is its owner's, and its model is nobody else's business.
        self.public_model = None if self.owner else self.model_id
        self.registry: dict[str, ModelSpec] = load_registry(
            _resolve(self.config.registry) if self.config.registry else None
        )
        self.keys = KeyRing(_resolve(self.config.keys_file))
        limiter = LimiterShards(limiters) if limiters else None
        if limiter is None and dedicated and dedicated.limiter_app:
            # Keys with a limit of their own are counted by the shared app's limiter; until it
            # answers, they are admitted uncounted.
            limiter = LimiterShards.in_app(dedicated.limiter_app)
        shared = config if isinstance(config, SharedArgs) else None
        self.rate_limit = shared.rate_limit.limit() if shared else None
        self.gate = Gate(self.keys, limiter, self.rate_limit.requests if self.rate_limit else None)
        self.decode_budget = MemoryBudget(
            int(self.config.decode_memory_mb * MB), self.config.decode_wait_s
        )
        self.health_probe = CachedProbe(self._check_health, self.config.health_ttl_s)
        self.limit_bytes = int(self.config.max_upload_mb * MB)
        # Videos decoding at once in this replica, each in its own thread of this pool.
        self.video_slots = asyncio.Semaphore(self.config.max_concurrent_videos)
        self.video_threads = ThreadPoolExecutor(
            self.config.max_concurrent_videos, thread_name_prefix="video"
        )
        self.url_sources = UrlSources(self.config.allow_url_sources, self.config.url_timeout_s)
        self.model_handle = CachedHandles(model_handle)  # tests reach stand-ins instead
        self.deployment_probes: dict[str, CachedProbe[Ping]] = {}  # endpoint name -> its probe
        self.metrics = IngressMetrics()
        self.app_name = _serve_app_name()  # named in holds, for the edge's metric
        self._openapi: dict[str, dict[str, Any]] = {}  # root path -> document

    # -- the ASGI app, built per replica so routes can use this instance ---------------------
    def __serve_build_asgi_app__(self) -> Starlette:
        routes = api_routes(self.config.mode, self)
        # The Predict page, its assets and example images (relative URLs: same files at both).
        routes += PredictPages(
            self.config.mode,
            endpoint=self.endpoint_name,
            model=self.public_model,
            max_upload_mb=self.config.max_upload_mb,
            max_video_mb=self.config.max_video_mb,
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
        headers = {**limit_headers(request), **exc.headers}
        if exc.hold is not None and holds.EDGE_HEADER.decode() in request.headers:
            hold = replace(exc.hold, application=self.app_name)
            headers[holds.HOLD_HEADER.decode()] = holds.encode(hold).decode()
        return error_response(exc.status, exc.message, headers)

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
        if self.owner is not None:
            # An API-created endpoint's health names its model: its owner's keys alone ask.
            await self._admit(request, DEDICATED_INFO, self.model_id, self.owner)
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
        admission = await self._admit(request, DEDICATED_INFO, self.model_id, self.owner)
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
                model=self.public_model,
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
        admission = await self._admit(request, DEDICATED_ROUTE, self.model_id, self.owner)
        return await self._predict(request, admission, self.registry[self.model_id], video=True)

    async def _admit(
        self,
        request: Request,
        rules: RouteRules,
        model_id: str | None = None,
        owner: str | None = None,
    ) -> Admission:
        """The gate's decision for this request (ApiError otherwise), its headers attached so
        that error responses from here on carry them too."""
        authorization = request.headers.get("authorization")
        admission = await self.gate.admit(authorization, rules, model_id, owner)
        attach_limit_headers(request, admission.headers)
        return admission

    @staticmethod
    def _json(admission: Admission, body: dict[str, Any]) -> Response:
        return JSONResponse(body, headers=admission.headers)


# The Serve deployment: the same class behind Serve's ASGI ingress, named as serve_config.yaml
# and the dashboards know it.
Ingress = serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=64,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)(serve.ingress()(IngressApp))

"""The HTTP ingress: auth, limits, upload decoding, parameters, and the spec's JSON.

It never imports torch: images go to the model deployment as numpy arrays through a handle, and
`Prediction` dicts of arrays come back to be shaped here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments import model_calls
from deployments.uploads import read_upload
from shared.errors import ApiError, model_not_found
from shared.images import decode_image
from shared.keys import KeyRecord, KeyRing
from shared.params import parse_params
from shared.registry import PROJECT_ROOT, ModelSpec, is_valid_model_id, load_registry
from shared.results import shape_response, shape_results

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class IngressConfig:
    """What differs between the shared service and a dedicated endpoint."""

    mode: str  # "shared" | "dedicated"
    registry: str | None = None
    keys_file: str = ".keys/keys.json"
    max_upload_mb: float = 10
    endpoint_name: str | None = None  # dedicated: its name
    model_id: str | None = None  # dedicated: its one model
    endpoints: dict[str, str] = field(default_factory=dict)  # shared: deployment name -> app


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress()
class Ingress:
    def __init__(self, model: DeploymentHandle, config: dict[str, Any]):
        self.config = IngressConfig(**config)
        self.model = model
        self.registry: dict[str, ModelSpec] = load_registry(
            _resolve(self.config.registry) if self.config.registry else None
        )
        self.keys = KeyRing(_resolve(self.config.keys_file))
        self.limit_bytes = int(self.config.max_upload_mb * 1024 * 1024)

    # -- the ASGI app, built per replica so routes can use this instance ---------------------
    def __serve_build_asgi_app__(self) -> Starlette:
        if self.config.mode == "shared":
            routes = [
                Route("/api/models", self.list_models, methods=["GET"]),
                Route("/api/models/{model_id}/predict", self.predict_shared, methods=["POST"]),
                Route(
                    "/api/models/{owner}/{project}/{model_id}/predict",
                    self.predict_shared,
                    methods=["POST"],
                ),
                Route("/health", self.health, methods=["GET"]),
            ]
        else:
            routes = [
                Route("/predict", self.predict_dedicated, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        return Starlette(
            routes=routes,
            exception_handlers={
                ApiError: self._api_error,
                HTTPException: self._http_error,
                Exception: self._unexpected,
            },
        )

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.message, exc.headers)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, exc.detail)
        return error_response(exc.status_code, message)

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        request_id = uuid.uuid4().hex[:12]
        logger.exception("request %s failed", request_id, exc_info=exc)
        return JSONResponse(
            {"error": "Server error: please retry", "requestId": request_id}, status_code=500
        )

    # -- routes -------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"healthy": True, "status": "ok"})

    async def list_models(self, request: Request) -> Response:
        key = self.keys.authenticate(request.headers.get("authorization"))
        models = [
            {"id": s.id, "task": s.task, "file": s.file}
            for s in self.registry.values()
            if key.allows(s.id)
        ]
        return JSONResponse({"models": models})

    async def predict_shared(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        key = self.keys.authenticate(request.headers.get("authorization"))
        spec = self._lookup(model_id, key)
        return await self._predict(request, spec)

    async def predict_dedicated(self, request: Request) -> Response:
        self.keys.authenticate(request.headers.get("authorization"))
        assert self.config.model_id is not None
        return await self._predict(request, self.registry[self.config.model_id])

    # -- the predict path ---------------------------------------------------------------------
    def _lookup(self, model_id: str, key: KeyRecord) -> ModelSpec:
        if not is_valid_model_id(model_id) or model_id not in self.registry:
            raise model_not_found()
        if not key.allows(model_id):
            raise model_not_found()
        return self.registry[model_id]

    async def _predict(self, request: Request, spec: ModelSpec) -> Response:
        started = time.perf_counter()
        upload = await read_upload(request, self.limit_bytes)
        params = parse_params(upload.fields, default_imgsz=spec.imgsz or 640)
        # Decoding is CPU work; keep it off the event loop so other requests keep flowing.
        image = await asyncio.to_thread(decode_image, upload.data)
        prediction = await model_calls.predict(self.model, spec.id, image.array, params)
        results = shape_results(prediction, image.shape, image.array.shape[:2], params)
        body = shape_response(
            results,
            image.shape,
            prediction["speed"],
            model_file=prediction["model"],
            versions=prediction["versions"],
            elapsed_s=time.perf_counter() - started,
        )
        return JSONResponse(body)

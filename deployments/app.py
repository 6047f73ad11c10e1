"""Application builders that serve_config.yaml imports (`import_path: deployments.app:...`).

Each builder validates its application's `args` with a pydantic model, so a typo in the YAML fails
the deploy with a clear message instead of running with a default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray.serve import Application

from autoscaling import presets
from deployments.ingress import Ingress
from deployments.limiter import Limiter
from deployments.model import DEFAULT_BATCH, ModelServer
from shared.origins import parse_origins
from shared.ratelimit import RateLimit


class Batching(BaseModel):
    """Defaults for the model deployment's user_config (which `serve deploy` changes live)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(DEFAULT_BATCH["max_batch_size"], ge=1, le=256)
    batch_wait_timeout_s: float = Field(DEFAULT_BATCH["batch_wait_timeout_s"], ge=0, le=10)


class CommonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    registry: str | None = None  # default: models.yaml in the project
    keys_file: str = ".keys/keys.json"
    max_upload_mb: float = Field(10, gt=0, le=100)
    num_cpus: float = Field(2, ge=0)  # per model replica; torch threads follow it
    num_gpus: float = Field(0, ge=0)
    batching: Batching = Batching()
    autoscaling: str | dict[str, Any] | None = None  # a preset name from autoscaling/presets.py
    autoscaling_overrides: dict[str, Any] | None = None
    num_replicas: int = Field(1, ge=1)  # when autoscaling is off
    allow_url_sources: bool = False  # `source` may be an http(s) URL; off: SSRF surface
    url_timeout_s: float = Field(10, gt=0, le=60)
    # What runs the network on CPU: ONNX Runtime (exported once from the same weights, cached
    # beside them) or PyTorch. GPU replicas always use torch (FP16). bench/README.md: figures.
    backend: Literal["torch", "onnx"] = "onnx"
    # The longest the ingress waits for a model answer before a JSON 504; keep it below
    # http_options.request_timeout_s, past which the proxy itself answers a plain-text 408.
    model_timeout_s: float = Field(30, gt=0, le=600)
    # Requests each ingress replica may hold waiting for a free model replica slot (beyond every
    # replica's max_ongoing_requests); past it a fast 503 with Retry-After. -1: unbounded.
    max_queued_requests: int = Field(64, ge=-1)
    # Origins (scheme://host[:port]) whose pages may call this app from a browser; empty:
    # same-origin only, no CORS headers at all.
    cors_origins: list[str] = []
    # Bytes that concurrent image decodes of one ingress replica may hold at once (each
    # reserves its header-derived peak first), and how long one may wait for its share before
    # a JSON 503 with Retry-After.
    decode_memory_mb: float = Field(1024, gt=0)
    decode_wait_s: float = Field(2, ge=0, le=60)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return parse_origins(value)


class RateLimitArgs(BaseModel):
    """Requests per rolling window per API key (a key's own `rate_limit` overrides `requests`)."""

    model_config = ConfigDict(extra="forbid")
    requests: int = Field(20, ge=1)
    window_s: float = Field(60, gt=0)


class SharedArgs(CommonArgs):
    preload: list[str] = []
    max_models_per_replica: int = Field(3, ge=1)
    rate_limit: RateLimitArgs = RateLimitArgs()


class EndpointArgs(CommonArgs):
    name: str
    model: str
    # The app whose Limiter counts keys that have a rate_limit of their own (keys without one
    # are not limited here); null: such keys go uncounted on this endpoint.
    limiter_app: str | None = "shared"


def _model_options(args: CommonArgs, name: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "name": name,
        "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        "user_config": args.batching.model_dump(),
        "max_queued_requests": args.max_queued_requests,
    }
    autoscaling = presets.resolve(args.autoscaling, args.autoscaling_overrides)
    if autoscaling:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = args.num_replicas
    return options


def _ingress_config(args: CommonArgs, **extra: Any) -> dict[str, Any]:
    return {
        "registry": args.registry,
        "keys_file": args.keys_file,
        "max_upload_mb": args.max_upload_mb,
        "allow_url_sources": args.allow_url_sources,
        "url_timeout_s": args.url_timeout_s,
        "model_timeout_s": args.model_timeout_s,
        "cors_origins": tuple(args.cors_origins),
        "decode_memory_mb": args.decode_memory_mb,
        "decode_wait_s": args.decode_wait_s,
        **extra,
    }


def build_shared(raw_args: dict[str, Any]) -> Application:
    """The shared predict service: one ingress in front of a multiplexed pool of all models."""
    args = SharedArgs.model_validate(raw_args)
    pool = ModelServer.options(**_model_options(args, "ModelPool")).bind(
        registry=args.registry,
        preload=args.preload,
        max_models_per_replica=args.max_models_per_replica,
        backend=args.backend,
        stuck_after_s=args.model_timeout_s,
    )
    limit = RateLimit(args.rate_limit.requests, args.rate_limit.window_s)
    # One Limiter replica per app counts for every Ingress replica: the limit stays exact.
    limiter = Limiter.bind(limit)
    config = _ingress_config(args, mode="shared", rate_limit=limit, limiter_app=None)
    return Ingress.bind(pool, config, limiter)


def build_endpoint(raw_args: dict[str, Any]) -> Application:
    """A dedicated endpoint: its own ingress and replicas for one model, no rate limit."""
    args = EndpointArgs.model_validate(raw_args)
    model = ModelServer.options(**_model_options(args, "Model")).bind(
        registry=args.registry,
        model_id=args.model,
        backend=args.backend,
        stuck_after_s=args.model_timeout_s,
    )
    return Ingress.bind(model, _ingress_config(args, **_dedicated(args)))


def _dedicated(args: EndpointArgs) -> dict[str, Any]:
    """The ingress config keys that make an app a dedicated endpoint."""
    return {
        "mode": "dedicated",
        "endpoint_name": args.name,
        "model_id": args.model,
        "limiter_app": args.limiter_app,
    }

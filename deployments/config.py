"""Each application's typed configuration: its `args` in serve_config.yaml, validated once.

The builders (deployments/app.py) validate an app's `args` with one of these models, so a typo
in the YAML fails the deploy with a clear message instead of running with a default, and the
same object then reaches the ingress and the model deployment as it is: every default is
written here and nowhere else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.origins import parse_origins
from shared.ratelimit import RateLimit
from shared.settings import DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_VIDEO_MB

# The model deployment's batching knobs when an app's user_config does not set them.
DEFAULT_BATCH = {"max_batch_size": 4, "batch_wait_timeout_s": 0.005}


class Batching(BaseModel):
    """Defaults for the model deployment's user_config (which `serve deploy` changes live)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_batch_size: int = Field(DEFAULT_BATCH["max_batch_size"], ge=1, le=256)
    batch_wait_timeout_s: float = Field(DEFAULT_BATCH["batch_wait_timeout_s"], ge=0, le=10)


class CommonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: str | None = None  # default: models.yaml in the project
    keys_file: str = ".keys/keys.json"
    max_upload_mb: float = Field(DEFAULT_MAX_UPLOAD_MB, gt=0, le=100)
    # Video, on dedicated endpoints (and the shared app's /api/deployments/.../predict): the
    # upload limit (the proxy's edge reads the same default from YOLO_MAX_VIDEO_MB), the most
    # frames one request may process (past it a 400), and how many frames of one video are at
    # the model at once (enough to fill its batches; each holds a decoded frame's memory).
    max_video_mb: float = Field(DEFAULT_MAX_VIDEO_MB, gt=0, le=1024)
    max_video_frames: int = Field(3000, ge=1)
    video_frames_in_flight: int = Field(8, ge=1, le=64)
    # Videos one ingress replica decodes at once (one thread each); more get a 503.
    max_concurrent_videos: int = Field(2, ge=1, le=64)
    num_cpus: float = Field(2, ge=0)  # per model replica; inference threads follow it
    num_gpus: float = Field(0, ge=0)
    # Memory Ray reserves per model replica (its `memory` resource), in GiB; None: none reserved.
    memory_gi: float | None = Field(None, gt=0)
    batching: Batching = Batching()
    autoscaling: str | dict[str, Any] | None = None  # a preset name from autoscaling/presets.py
    autoscaling_overrides: dict[str, Any] | None = None
    num_replicas: int = Field(1, ge=1)  # when autoscaling is off
    allow_url_sources: bool = False  # `source` may be an http(s) URL; off: SSRF surface
    url_timeout_s: float = Field(10, gt=0, le=60)
    # What runs the network on CPU: ONNX Runtime (exported once from the same weights, cached
    # beside them), PyTorch, or OpenVINO (the `openvino` extra; FP32, so PyTorch's detections;
    # slower than ONNX Runtime on this project's CPU). GPU replicas always use torch (FP16).
    # bench/README.md: figures.
    backend: Literal["torch", "onnx", "openvino"] = "onnx"
    # The longest the ingress waits for a model answer before a JSON 504, and the longest an
    # inference may run before the model replica fails its health check; keep it below
    # http_options.request_timeout_s, past which the proxy itself gives up.
    model_timeout_s: float = Field(30, gt=0, le=600)
    # Requests each ingress replica may hold waiting for a free model replica slot (beyond every
    # replica's max_ongoing_requests); past it a fast 503 with Retry-After. -1: unbounded.
    max_queued_requests: int = Field(64, ge=-1)
    # Origins (scheme://host[:port]) whose pages may call this app from a browser; empty:
    # same-origin only, no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # Bytes that concurrent image decodes of one ingress replica may hold at once (each
    # reserves its header-derived peak first), and how long one may wait for its share before
    # a JSON 503 with Retry-After.
    decode_memory_mb: float = Field(1024, gt=0)
    decode_wait_s: float = Field(2, ge=0, le=60)
    # A dedicated endpoint's /health answer (one model round trip) is reused this long.
    health_ttl_s: float = Field(1, ge=0, le=60)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(parse_origins(list(value)))


# Serve learns that a replica died (its process killed, its node lost) from the next health
# check: with Serve's 10 s period that added up to 10 s before the replacement even started
# (tests/test_multinode.py's node loss). A check is one actor call (ModelServer.check_health
# reads a dict). Every deployment of the project takes this.
HEALTH_CHECK_PERIOD_S = 2.0


class RateLimitArgs(BaseModel):
    """Requests per rolling window per API key (a key's own `rate_limit` overrides `requests`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    requests: int = Field(20, ge=1)
    window_s: float = Field(60, gt=0)
    # Limiter deployments the key hashes are spread over, each one replica counting its keys
    # exactly (deployments/limiter.py): more shards, more admissions per second in all.
    shards: int = Field(1, ge=1, le=64)

    def limit(self) -> RateLimit:
        return RateLimit(self.requests, self.window_s)


class ControlPlaneArgs(BaseModel):
    """The deployments API's control plane (deployments/control_plane.py), in the shared app."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The SQLite database of the API-created deployments: the source of truth they are
    # redeployed from after a restart. Relative paths are under the project; it must live on
    # the head node (where the control plane runs), on a PersistentVolumeClaim under KubeRay.
    database: str = ".state/deployments.sqlite"
    # How often records and Serve's applications are compared (and any difference acted on).
    reconcile_s: float = Field(2, gt=0, le=60)
    # How API-created endpoints scale (a preset of autoscaling/presets.py).
    autoscaling: str = "latency-first"


class SharedArgs(CommonArgs):
    """The shared predict service: every registry model, rate-limited per key."""

    mode: Literal["shared"] = "shared"
    preload: tuple[str, ...] = ()
    max_models_per_replica: int = Field(3, ge=1)
    rate_limit: RateLimitArgs = RateLimitArgs()
    control_plane: ControlPlaneArgs = ControlPlaneArgs()
    # The Prometheus server that scrapes Ray's metrics (`make serve` starts one beside Ray):
    # what the deployments' metrics are read from. null: metrics answer 503.
    prometheus_url: str | None = "http://127.0.0.1:9090"


class EndpointArgs(CommonArgs):
    """A dedicated endpoint: one model, its own replicas, no rate limit but a key's own."""

    mode: Literal["dedicated"] = "dedicated"
    name: str
    model: str
    # The app whose Limiter counts keys that have a rate_limit of their own (keys without one
    # are not limited here); null: such keys go uncounted on this endpoint.
    limiter_app: str | None = "shared"
    # The workspace an API-created endpoint belongs to: only its keys reach it. None: an
    # endpoint of serve_config.yaml, which every key may call.
    owner: str | None = None
    # Serve's max_surge_percent for this deploy's rollout (shared/rollout.py): the control
    # plane sets 100 where the new replicas fit beside the running ones.
    rollout_surge_percent: int = Field(0, ge=0, le=100)


AppArgs = SharedArgs | EndpointArgs

"""Prometheus metrics through `ray.serve.metrics`, so Ray's export carries them from every replica.

Ray adds the `deployment`, `replica` and `application` labels itself and prefixes every name with
`ray_` (counters also get `_total`), so `yolo_requests` is scraped as `ray_yolo_requests_total`.
Labels are bounded sets only: route templates, status codes, image formats, registry model IDs.
Never a key, a key's name or hash, nor a raw path.

Metric objects must be created inside a replica (after Serve has set its context), so each
deployment builds its recorder in `__init__`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ray.serve.metrics import Counter, Histogram

# Seconds. Decode and the model stages run from ~1 ms (GPU) to seconds (big images on a CPU).
LATENCY_BUCKETS_S = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
]  # fmt: skip
LOAD_BUCKETS_S = [0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]
# Ray's agent rebuilds histograms from bucket midpoints, so `_sum` is only as exact as those.
# Half-integer bounds put every batch size up to 16 alone in a bucket whose midpoint is that
# size, so sum/count is the exact mean batch size.
BATCH_BUCKETS = [i + 0.5 for i in range(17)] + [24.5, 32.5, 48.5, 64.5]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as registered with Ray; exported as ray_<name>
    kind: str  # "counter" | "histogram"
    description: str
    tags: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def exported(self) -> tuple[str, ...]:
        """The Prometheus series names Ray's export gives this metric."""
        base = f"ray_{self.name}"
        if self.kind == "counter":
            return (f"{base}_total",)
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")


def _latency(name: str, what: str, tags: tuple[str, ...]) -> MetricSpec:
    return MetricSpec(name, "histogram", what, tags, tuple(LATENCY_BUCKETS_S))


# Ingress: one record per HTTP request, from the response status.
REQUESTS = MetricSpec(
    "yolo_requests", "counter", "HTTP requests by route template and status.", ("route", "status")
)
REQUEST_SECONDS = _latency(
    "yolo_request_seconds", "Total time in the ingress per request.", ("route", "status")
)
RECEIVED_BYTES = MetricSpec(
    "yolo_received_bytes", "counter", "Request body bytes the ingress read.", ("route",)
)
UNAUTHORIZED = MetricSpec("yolo_unauthorized", "counter", "Requests answered 401.")
RATE_LIMITED = MetricSpec("yolo_rate_limited", "counter", "Requests answered 429.")
# The proxy's edge (deployments/edge.py): rejections answered from the ingress's holds.
HELD_ANSWERS = MetricSpec(
    "yolo_held_answers",
    "counter",
    "401s and 429s the HTTP proxy answered itself, from holds the ingress gave it.",
    ("application", "status"),
)
# Ingress: per decoded image.
IMAGES = MetricSpec("yolo_images", "counter", "Images decoded, by format.", ("format",))
DECODE_SECONDS = _latency("yolo_decode_seconds", "Image decode time.", ("format",))
# Ingress: per video frame decoded and sent to the model (after vid_stride).
VIDEO_FRAMES = MetricSpec(
    "yolo_video_frames", "counter", "Video frames decoded and sent to the model."
)
# Model replicas.
QUEUE_WAIT_SECONDS = _latency(
    "yolo_queue_wait_seconds",
    "Time from a request reaching the model replica to the start of its batch.",
    ("model",),
)
PREPROCESS_SECONDS = _latency(
    "yolo_preprocess_seconds", "Ultralytics preprocess time per image.", ("model",)
)
INFERENCE_SECONDS = _latency(
    "yolo_inference_seconds", "Ultralytics inference time per image.", ("model",)
)
POSTPROCESS_SECONDS = _latency(
    "yolo_postprocess_seconds", "Ultralytics postprocess time per image.", ("model",)
)
BATCH_SIZE = MetricSpec(
    "yolo_batch_size", "histogram", "Requests per @serve.batch call.", (), tuple(BATCH_BUCKETS)
)
MODEL_LOADS = MetricSpec(
    "yolo_model_loads", "counter", "Models loaded (and warmed up) by a replica.", ("model",)
)
MODEL_LOAD_SECONDS = MetricSpec(
    "yolo_model_load_seconds",
    "histogram",
    "Time to load and warm up a model.",
    ("model",),
    tuple(LOAD_BUCKETS_S),
)

INGRESS_METRICS = (
    REQUESTS,
    REQUEST_SECONDS,
    RECEIVED_BYTES,
    UNAUTHORIZED,
    RATE_LIMITED,
    IMAGES,
    DECODE_SECONDS,
    VIDEO_FRAMES,
)
MODEL_METRICS = (
    QUEUE_WAIT_SECONDS,
    PREPROCESS_SECONDS,
    INFERENCE_SECONDS,
    POSTPROCESS_SECONDS,
    BATCH_SIZE,
    MODEL_LOADS,
    MODEL_LOAD_SECONDS,
)
PROXY_METRICS = (HELD_ANSWERS,)
ALL_METRICS = INGRESS_METRICS + MODEL_METRICS + PROXY_METRICS


def _build(spec: MetricSpec) -> Counter | Histogram:
    if spec.kind == "counter":
        return Counter(spec.name, description=spec.description, tag_keys=spec.tags)
    return Histogram(
        spec.name, description=spec.description, boundaries=list(spec.buckets), tag_keys=spec.tags
    )


class _Recorder:
    def __init__(self, specs: Iterable[MetricSpec]):
        self._metrics: dict[str, Any] = {spec.name: _build(spec) for spec in specs}

    def _inc(self, spec: MetricSpec, value: float = 1.0, **tags: str) -> None:
        self._metrics[spec.name].inc(value, tags=tags)

    def _observe(self, spec: MetricSpec, value: float, **tags: str) -> None:
        self._metrics[spec.name].observe(value, tags=tags)


class IngressMetrics(_Recorder):
    def __init__(self) -> None:
        super().__init__(INGRESS_METRICS)

    def request_done(self, route: str, status: int, seconds: float, received: int) -> None:
        code = str(status)
        self._inc(REQUESTS, route=route, status=code)
        self._observe(REQUEST_SECONDS, seconds, route=route, status=code)
        if received:
            self._inc(RECEIVED_BYTES, received, route=route)
        if status == 401:
            self._inc(UNAUTHORIZED)
        elif status == 429:
            self._inc(RATE_LIMITED)

    def image_decoded(self, image_format: str, seconds: float) -> None:
        self._inc(IMAGES, format=image_format)
        self._observe(DECODE_SECONDS, seconds, format=image_format)

    def video_frame(self) -> None:
        self._inc(VIDEO_FRAMES)


class ModelMetrics(_Recorder):
    def __init__(self) -> None:
        super().__init__(MODEL_METRICS)

    def model_loaded(self, model_id: str, seconds: float) -> None:
        self._inc(MODEL_LOADS, model=model_id)
        self._observe(MODEL_LOAD_SECONDS, seconds, model=model_id)

    def batch_started(self, arrivals: Iterable[tuple[str, float]]) -> None:
        """`arrivals`: (model ID, time.perf_counter() when the request reached this replica)."""
        now = time.perf_counter()
        size = 0
        for model_id, arrived in arrivals:
            size += 1
            self._observe(QUEUE_WAIT_SECONDS, max(0.0, now - arrived), model=model_id)
        self._observe(BATCH_SIZE, size)

    def image_timed(self, model_id: str, speed_ms: Mapping[str, float]) -> None:
        """Ultralytics' per-image `speed` dict (milliseconds) into the three stage histograms."""
        for spec, key in (
            (PREPROCESS_SECONDS, "preprocess"),
            (INFERENCE_SECONDS, "inference"),
            (POSTPROCESS_SECONDS, "postprocess"),
        ):
            self._observe(spec, float(speed_ms.get(key) or 0.0) / 1000.0, model=model_id)


class RequestMetricsMiddleware:
    """Pure ASGI middleware: one record per request from the status actually sent.

    It sits outside Starlette's exception handling, so it sees the 401, 404 or 429 that an
    `ApiError` handler produced, wherever in the ingress the error was raised; an exception
    that escapes every handler becomes the 500 that Starlette's outermost layer sends.
    """

    def __init__(self, app: Any, metrics: IngressMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        received = 0

        async def counting_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def status_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting_receive, status_send)
        finally:
            self.metrics.request_done(
                route_template(scope), status, time.perf_counter() - started, received
            )


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's path template (`/api/models/{model_id}/predict`), never the raw path:
    a raw path would make every model ID a client tried its own time series."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"

"""Every wire shape of the API as a pydantic model: the request forms and each response body.

The response code keeps building plain dicts (their key order and number formatting are the
spec's, and the hot path stays free of model instances); these models are what `/openapi.json`
is generated from and what `deployments/response_check.py` holds every body to in test runs.
They are strict and closed, so a wrong type, a missing key or an unknown one is a mismatch.
The spec (`platform-inference.md`) wins where the official SDK's types differ: segments are
[[x, y], ...], keypoints [{x, y, conf}], obb {x1..y4}. `metadata.task` and `classNames` are
this server's additions, optional in the contract because the Platform does not send them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    MISSING,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    RootModel,
    Tag,
    model_validator,
)

from shared.keys import OWNER_PATTERN
from shared.params import (
    CONF_RANGE,
    DECIMALS_RANGE,
    IMGSZ_RANGE,
    IOU_RANGE,
    VID_STRIDE_RANGE,
    PredictParams,
)

Task = Literal["detect", "segment", "pose", "obb", "classify"]
# A 32x32 grey PNG, so that documentation and the fuzzer's example reach a real model.
EXAMPLE_SOURCE = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAK0lEQVR42u3NIQEAMAgAMHhqNJrQLwFuK7Csnrj04ph"
    "AIBAIBAKBQCDY8gEG7AHGQfZyaQAAAABJRU5ErkJggg=="
)
Confidence = Annotated[float, Field(ge=0, le=1)]


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- predict -----------------------------------------------------------------------------------
class Box(Wire):
    """Axis-aligned, in original-image pixels (0-1 fractions with `normalize`)."""

    x1: float
    y1: float
    x2: float
    y2: float


class Keypoint(Wire):
    x: float
    y: float
    conf: Confidence


class Corners(Wire):
    """An oriented box's four corners, in the model's order."""

    x1: float
    y1: float
    x2: float
    y2: float
    x3: float
    y3: float
    x4: float
    y4: float


class Classification(Wire):
    """One class of a classification's top 5."""

    cls: int = Field(alias="class", ge=0)
    name: str
    confidence: Confidence


class Detection(Classification):
    box: Box


class Segmentation(Detection):
    segments: list[tuple[float, float]] = Field(description="The mask's polygon: [x, y] points")


class Pose(Detection):
    keypoints: list[Keypoint]


class OrientedDetection(Detection):
    obb: Corners


RESULT_TYPES: dict[Task, type[Classification]] = {
    "detect": Detection,
    "segment": Segmentation,
    "pose": Pose,
    "obb": OrientedDetection,
    "classify": Classification,
}
# A result's own keys say which task made it: told apart up front, a mismatch names the one
# model it should have matched instead of every alternative's complaints.
_TASK_KEYS: tuple[tuple[str, Task], ...] = (
    ("segments", "segment"),
    ("keypoints", "pose"),
    ("obb", "obb"),
    ("box", "detect"),
)


def _result_task(item: Any) -> str:
    keys = item if isinstance(item, dict) else vars(item)
    return next((task for key, task in _TASK_KEYS if key in keys), "classify")


Result = Annotated[
    Annotated[Detection, Tag("detect")]
    | Annotated[Segmentation, Tag("segment")]
    | Annotated[Pose, Tag("pose")]
    | Annotated[OrientedDetection, Tag("obb")]
    | Annotated[Classification, Tag("classify")],
    Discriminator(_result_task),
]


class Speed(Wire):
    """Milliseconds per stage in the model replica."""

    preprocess: NonNegativeFloat
    inference: NonNegativeFloat
    postprocess: NonNegativeFloat


class ImageResult(Wire):
    shape: tuple[PositiveInt, PositiveInt] = Field(description="[height, width] as sent")
    results: list[Result]
    speed: Speed
    # A video's entries (one per processed frame) say which frame they are.
    frame: NonNegativeInt | MISSING = Field(MISSING, description="Video: the frame's 0-based index")
    timestamp: NonNegativeFloat | MISSING = Field(
        MISSING, description="Video: the frame's time from the start, seconds"
    )


class VideoDescription(Wire):
    """What the service read of a video (this server's addition)."""

    container: str = Field(description="FFmpeg's name for the container format")
    codec: str = Field(description="FFmpeg's name for the video codec")
    width: NonNegativeInt = Field(description="As the stream declares it (0: not declared)")
    height: NonNegativeInt = Field(description="As the stream declares it (0: not declared)")
    fps: NonNegativeFloat | None = Field(description="Average frame rate, when known")
    vidStride: PositiveInt = Field(description="Every vid_stride-th frame was processed")


class Metadata(Wire):
    imageCount: PositiveInt
    functionTimeCall: NonNegativeFloat = Field(description="Seconds in the service")
    model: str = Field(description="Weights file name")
    version: dict[str, str] = Field(description="Library versions")
    task: Task | MISSING = MISSING
    classNames: list[str] | MISSING = MISSING
    video: VideoDescription | MISSING = MISSING


class PredictResponse(Wire):
    images: list[ImageResult] = Field(
        min_length=1,
        description="One entry per image, in the order sent, or per processed video frame",
    )
    metadata: Metadata

    @model_validator(mode="after")
    def _counted(self) -> PredictResponse:
        if self.metadata.imageCount != len(self.images):
            raise ValueError(f"imageCount {self.metadata.imageCount} for {len(self.images)}")
        return self

    @model_validator(mode="after")
    def _results_are_the_task_s(self) -> PredictResponse:
        # Keys alone cannot catch a segment result that lost its `segments` (it still is a valid
        # detection); the task the metadata names can.
        task, names = self.metadata.task, self.metadata.classNames
        by_class = dict(enumerate(names)) if names is not MISSING else None
        for i, result in enumerate(r for image in self.images for r in image.results):
            if task is not MISSING and type(result) is not RESULT_TYPES[task]:
                raise ValueError(f"results[{i}] is a {type(result).__name__}, not a {task} result")
            if by_class is not None and result.name != by_class.get(result.cls):
                raise ValueError(f"results[{i}]: class {result.cls} is not named {result.name!r}")
        return self


class StreamedMetadata(Wire):
    metadata: Metadata


class StreamedError(Wire):
    error: str = Field(description="Why the answer ended early")


class PredictLine(RootModel[ImageResult | StreamedMetadata | StreamedError]):
    """One line of an `application/x-ndjson` answer: an image's (or frame's) entry as each is
    ready, then the metadata (or an error, if it failed midway)."""


# -- the other routes --------------------------------------------------------------------------
class ModelEntry(Wire):
    id: str
    task: Task
    file: str


class ModelList(Wire):
    models: list[ModelEntry]


class ServiceHealth(Wire):
    healthy: Literal[True]
    status: Literal["ok"]


class EndpointHealth(Wire):
    """A dedicated endpoint whose model answered; latencyMs is that round trip."""

    healthy: Literal[True]
    status: Literal["ready"]
    latencyMs: NonNegativeFloat
    model: str
    task: Task


class EndpointDown(Wire):
    """A dedicated endpoint whose model does not answer; status says why."""

    healthy: Literal[False]
    status: str
    latencyMs: None
    model: str
    task: None


class EndpointInfo(Wire):
    name: str
    model: str = Field(description="Model ID in the registry")
    file: str = Field(description="Weights file name")
    task: Task
    names: list[str] = Field(description="Class names by index")
    imgsz: PositiveInt = Field(description="Default inference size")
    device: str


class AccountCounts(Wire):
    """What the workspace owns: nothing here (the registry's models are the service's)."""

    projects: NonNegativeInt
    datasets: NonNegativeInt
    models: NonNegativeInt


class AccountSummary(Wire):
    """The calling key's workspace, in the official SDK's `AccountSummaryResponse` shape (the
    inference spec defines none): `username` is the key's owner, which the SDK's CLI puts in URL
    paths for an omitted owner. A self-hosted service has no billing, plans or teams, so the rest
    says so: a personal account on the free plan, no credits, nothing owned, no teams."""

    username: str = Field(pattern=OWNER_PATTERN.pattern, description="The key's owner")
    name: str = Field(description="The owner, as its display name")
    accountType: Literal["personal", "team"]
    plan: Literal["free", "pro", "enterprise"]
    creditsCents: NonNegativeInt
    counts: AccountCounts
    teams: list[dict[str, Any]] = Field(max_length=0, description="Always empty here")


# -- the official SDK's deployments (its `DeploymentsListResponse` and siblings) ---------------
# The endpoints of serve_config.yaml and the API-created ones, alike: the slug is the id.
DeploymentStatus = Literal["creating", "deploying", "ready", "stopping", "stopped", "failed"]
Region = Literal["us", "eu", "ap"]
IsoTime = Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")]
# A deployment's slug is a DNS label, as a Cloud Run service name: it becomes a route.
DEPLOYMENT_SLUG = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
# The Platform's choices per replica; the SDK's create and update take only these.
Cpu = Literal[1, 2, 4, 6, 8]
MemoryGi = Literal[2, 4, 8, 16, 24, 32]
DEFAULT_CPU: Cpu = 1
DEFAULT_MEMORY_GI: MemoryGi = 2
METADATA_BYTES = 16 * 1024  # a deployment's metadata, as JSON
Text = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
RegionName = Annotated[str, Field(max_length=40, pattern=r"^[a-z]+(-[a-z0-9]+)+$")]
ModelId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class DeploymentResources(Wire):
    """Per model replica (`num_cpus`, reserved memory: 0 where none is reserved), and the
    replica bounds (autoscaling's, or `num_replicas` for both)."""

    cpu: NonNegativeFloat
    memoryGi: NonNegativeFloat
    minInstances: NonNegativeInt
    maxInstances: NonNegativeInt


class DeploymentSummary(Wire):
    """A deployment: an endpoint of serve_config.yaml (everyone's, read-only) or one created
    through this API (its owner's alone)."""

    id: str = Field(description="Its slug, as `deployment`")
    owner: str = Field(
        description="The creator's workspace; for an endpoint of serve_config.yaml, the caller's"
    )
    project: str | MISSING = Field(MISSING, description="As given at creation (metadata here)")
    model: str | MISSING = Field(MISSING, description="Its model ID in the registry")
    task: Task | MISSING = MISSING
    deployment: str
    name: str
    status: DeploymentStatus
    statusMessage: str | MISSING = Field(MISSING, description="What it waits for, or why not")
    region: str = Field(
        description="As requested (it runs on this cluster); self-hosted for config"
    )
    serviceUrl: str | MISSING = Field(MISSING, description="The endpoint's URL on this server")
    resources: DeploymentResources
    deployedAt: IsoTime | MISSING = MISSING
    createdAt: IsoTime = Field(
        description="For serve_config.yaml's, its last deploy (as updatedAt)"
    )
    updatedAt: IsoTime


class Deployment(DeploymentSummary):
    metadata: dict[str, Any] = Field(description="As last set by PATCH {metadata}")


class CreateDeploymentBody(Wire):
    """`POST /api/deployments/{owner}`: the SDK's `deployments.create`."""

    project: Text = Field(description="Kept as metadata: registry models belong to no project")
    model: ModelId = Field(description="A model ID from `GET /api/models`")
    deployment: str = Field(pattern=DEPLOYMENT_SLUG, description="The slug: /endpoints/{slug}")
    name: Text = Field(description="Display name")
    region: RegionName = Field(description="Stored and shown; it runs on this cluster")
    cpu: Cpu = Field(DEFAULT_CPU, description="CPUs per replica")
    memoryGi: MemoryGi = Field(DEFAULT_MEMORY_GI, description="Memory per replica, GiB")


class MetadataChange(Wire):
    metadata: dict[str, Any]


class NameChange(Wire):
    name: Text


class ActionChange(Wire):
    """start, stop, replace (`model`) or resize (`cpu`, `memoryGi`); camera is not supported."""

    action: Literal["start", "stop", "camera", "replace", "resize"]
    url: str | MISSING | None = MISSING
    project: Text | MISSING = MISSING
    model: ModelId | MISSING = MISSING
    name: Text | MISSING = MISSING
    cpu: Cpu | MISSING = MISSING
    memoryGi: MemoryGi | MISSING = MISSING


class UpdateDeploymentBody(RootModel[MetadataChange | NameChange | ActionChange]):
    """`PATCH /api/deployments/{owner}/{deployment}`: the SDK's `deployments.update`, one of
    its three forms."""


class DeploymentCreated(Wire):
    id: str
    deployment: str
    status: Literal["creating"]
    message: str
    region: str = Field(description="As requested")


class DeploymentUpdated(Wire):
    success: Literal[True]
    status: DeploymentStatus = Field(description="Its status once the change is taken")
    message: str = Field(description="What happens next")
    deployment: str | MISSING = MISSING


class DeploymentDeleted(Wire):
    success: Literal[True]


class DeploymentList(Wire):
    deployments: list[DeploymentSummary]
    total: NonNegativeInt = Field(description="How many matched, before `limit`")
    region: Region


class DeploymentDetail(Wire):
    deployment: Deployment
    region: Region


class DeploymentHealth(Wire):
    """One round trip to the endpoint's model; `status` is its HTTP status (200 when healthy)."""

    healthy: bool
    status: int | MISSING = MISSING
    latencyMs: NonNegativeFloat
    error: str | MISSING = Field(MISSING, description="Why it is not healthy")


# -- a deployment's logs and metrics (the SDK's DeploymentsLogsResponse, ...MetricsResponse) ---
LogSeverity = Literal[
    "DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"
]


class HttpRequestLog(Wire):
    """Serve's access log line of one HTTP request to the deployment's replicas."""

    method: str
    url: str = Field(description="The route, as Serve logs it")
    status: int
    latencyMs: NonNegativeFloat


class LogEntryItem(Wire):
    timestamp: IsoTime
    severity: LogSeverity
    message: str
    httpRequest: HttpRequestLog | MISSING = MISSING


class DeploymentLogs(Wire):
    entries: list[LogEntryItem] = Field(description="Newest first")
    nextPageToken: str | MISSING = Field(MISSING, description="For the next, older page")


class TimePoint(Wire):
    timestamp: IsoTime
    value: float


class TimeRange(Wire):
    start: IsoTime
    end: IsoTime


class MetricsSummary(Wire):
    totalRequests: NonNegativeFloat
    errorCount: NonNegativeFloat
    errorRate: NonNegativeFloat = Field(description="5xx answers over all, 0 to 1")
    avgLatencyMs: NonNegativeFloat
    p50LatencyMs: NonNegativeFloat
    p95LatencyMs: NonNegativeFloat
    p99LatencyMs: NonNegativeFloat


class MetricsSeries(Wire):
    requests: list[TimePoint] = Field(description="Predictions per step")
    errors: list[TimePoint] = Field(description="5xx answers per step")
    latencyP50: list[TimePoint] = Field(description="ms; steps without requests left out")
    latencyP95: list[TimePoint]
    cpuUtilization: list[TimePoint] = Field(description="% of the replicas' reserved CPUs")
    memoryUtilization: list[TimePoint] = Field(description="% of their reserved memory")
    instanceCount: list[TimePoint] = Field(description="Healthy model replicas")


class DeploymentMetrics(Wire):
    deploymentId: str
    region: str
    timeRange: TimeRange
    summary: MetricsSummary
    timeSeries: MetricsSeries


class OverviewSummary(Wire):
    totalRequests: NonNegativeFloat
    errorRate: NonNegativeFloat
    p95LatencyMs: NonNegativeFloat


class OverviewSeries(Wire):
    requests: list[TimePoint]
    errors: list[TimePoint]
    latencyP95: list[TimePoint]


class DeploymentMetricsOverview(Wire):
    deploymentId: str
    region: str
    timeRange: TimeRange
    summary: OverviewSummary
    timeSeries: OverviewSeries


class DeploymentSparkline(Wire):
    requests24h: list[NonNegativeFloat] = Field(
        min_length=24, max_length=24, description="Requests per hour, oldest first"
    )
    totalRequests: NonNegativeFloat
    errorRate: NonNegativeFloat
    avgLatencyMs: NonNegativeFloat


class DeploymentMetricsReply(
    RootModel[DeploymentMetrics | DeploymentMetricsOverview | DeploymentSparkline]
):
    """By the query: `sparkline=true`, `view=overview`, or everything."""


# -- query strings: parsed with these models by their routes, documented from them ----------
class Query(BaseModel):
    # Query values are strings on the wire: "5" is the integer 5 here (strict elsewhere).
    # Parameters a route does not know are ignored, as browsers and proxies add their own.
    model_config = ConfigDict(extra="ignore", frozen=True)


class DeploymentListQuery(Query):
    status: DeploymentStatus | None = Field(None, description="Only deployments in this status")
    model: str | None = Field(
        None, max_length=200, description="Only this model (a Platform project/model path too)"
    )
    limit: int = Field(20, ge=1, le=100, description="At most this many (total counts all)")


class LogsQuery(Query):
    severity: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[A-Za-z]+(,[A-Za-z]+)*$",
        description="Comma-separated severities (DEFAULT, DEBUG, INFO, NOTICE, WARNING, ERROR, "
        "CRITICAL, ALERT, EMERGENCY)",
    )
    limit: int = Field(100, ge=1, le=1000, description="Entries per page")
    pageToken: str | None = Field(
        None, max_length=200, description="The last page's nextPageToken: the next, older page"
    )


class MetricsQuery(Query):
    range: Literal["1h", "6h", "24h", "7d", "30d"] = Field("24h", description="How far back")
    view: Literal["overview"] | None = Field(None, description="Requests, errors and p95 only")
    sparkline: Literal["true", "false"] = Field(
        "false", description="24 hourly request counts and a summary"
    )


class Error(Wire):
    """Every error, whatever the status."""

    error: str = Field(min_length=1, description="What went wrong")
    requestId: str | MISSING = Field(
        MISSING, description="500 only: quote it when reporting the problem"
    )


class OpenApiDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3.1 document."""


# -- request forms -----------------------------------------------------------------------------
_DEFAULTS = PredictParams()


class PredictParameters(Wire):
    conf: float = Field(
        _DEFAULTS.conf, ge=CONF_RANGE[0], le=CONF_RANGE[1], description="Minimum confidence"
    )
    iou: float = Field(
        _DEFAULTS.iou, ge=IOU_RANGE[0], le=IOU_RANGE[1], description="NMS IoU threshold"
    )
    imgsz: int = Field(
        _DEFAULTS.imgsz,
        ge=IMGSZ_RANGE[0],
        le=IMGSZ_RANGE[1],
        description="Inference size (the model's own size when omitted)",
    )
    normalize: bool = Field(
        _DEFAULTS.normalize,
        description="Coordinates as 0-1 fractions of the image's width and height",
    )
    decimals: int = Field(
        _DEFAULTS.decimals,
        ge=DECIMALS_RANGE[0],
        le=DECIMALS_RANGE[1],
        description="Decimal places of coordinates and confidences",
    )
    vid_stride: int = Field(
        _DEFAULTS.vid_stride,
        ge=VID_STRIDE_RANGE[0],
        le=VID_STRIDE_RANGE[1],
        description="Video (dedicated endpoints): process every vid_stride-th frame",
    )


_SOURCE = (
    "The image as base64 or a base64 data URI (or an http(s) URL that the server fetches, "
    "where its config allows URL sources)"
)


def _an_image(schema: dict[str, Any]) -> None:
    schema["anyOf"] = [{"required": ["file"]}, {"required": ["source"]}]


class PredictForm(PredictParameters):
    """multipart/form-data: `file` or `source`, and optionally the parameters. Either may be
    repeated for up to 16 images in one request (all of them within the upload limit), each
    its own `images[]` entry, in order; on the shared service each counts as one request."""

    model_config = ConfigDict(json_schema_extra=_an_image)
    file: bytes | MISSING = Field(
        MISSING,
        description="The image (JPEG, PNG, WebP, AVIF, HEIC, JP2, TIFF, BMP, DNG, MPO), at most "
        "the server's upload limit. On dedicated endpoints also one video (ASF, AVI, GIF, M4V, "
        "MKV, MOV, MP4, MPEG, MPG, TS, WEBM, WMV) up to the video limit: one entry per "
        "processed frame",
    )
    source: str | MISSING = Field(MISSING, description=_SOURCE, examples=[EXAMPLE_SOURCE])

    @model_validator(mode="after")
    def _an_image(self) -> PredictForm:
        if self.file is MISSING and self.source is MISSING:
            raise ValueError("'file' or 'source'")
        return self


class SourceForm(PredictParameters):
    """application/x-www-form-urlencoded (what the official SDK sends without a file): `source`
    and optionally the parameters."""

    source: str = Field(description=_SOURCE, examples=[EXAMPLE_SOURCE])

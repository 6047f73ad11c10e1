"""The predict path of every predict route: images (up to 16) or a video in, the spec's JSON,
NDJSON lines or an annotated image out.

A mixin of `IngressApp` (deployments/ingress.py), as `DeploymentRoutes` is: it uses the app's
config, gate, decode budget, metrics and model handles.

- Several images: each is decoded under the decode budget and sent to the model as its own
  call, all at once, so the model's `@serve.batch` batches them; `images[]` keeps their order.
  On the shared route each image counts against the key's limit (`Gate.count_images`).
- A video (dedicated routes only): frames are decoded one at a time in a worker thread
  (shared/video.py) and up to `video_frames_in_flight` of them are at the model at once, again
  filling its batches; the decode budget holds their memory. The answer is one `images[]`
  entry per processed frame, with `frame` and `timestamp`; NDJSON sends each as it is ready,
  and a client that leaves stops the decoding.
- `Accept: image/jpeg|png|webp`: the image decoded at full size (the model gets it reduced as
  the JSON path would), its results drawn by shared/annotate.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import cv2
import numpy as np
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from deployments import model_calls
from deployments.gate import Admission, attach_limit_headers
from deployments.uploads import UploadLimits, read_upload
from shared import annotate
from shared.errors import ApiError
from shared.images import DecodedImage, decode_image, decode_peak_bytes, draft_factor
from shared.memory_budget import MB
from shared.negotiation import IMAGE_OUTPUTS, NDJSON, Output, negotiate
from shared.params import PredictParams, parse_params
from shared.registry import ModelSpec
from shared.results import Prediction, shape_results
from shared.timing import PhaseTimer
from shared.video import VideoFrame, VideoInfo, VideoReader

if TYPE_CHECKING:
    from deployments.ingress import IngressApp

# Frames beside those at the model whose memory a video reserves: the one being decoded, and
# the one being converted to RGB.
_DECODE_AHEAD = 2
NO_FRAMES = "Invalid video: no frame could be decoded"


@dataclass(frozen=True)
class Entry:
    """One `images[]` entry: an image's (or a frame's) shaped results."""

    shape: tuple[int, int]
    results: list[dict[str, Any]]
    speed: dict[str, float]
    frame: VideoFrame | None = None

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "shape": [int(self.shape[0]), int(self.shape[1])],
            "results": self.results,
            "speed": {k: round(float(v), 2) for k, v in self.speed.items()},
        }
        if self.frame is not None:
            body["frame"] = self.frame.index
            body["timestamp"] = self.frame.timestamp
        return body


@dataclass(frozen=True)
class OpenVideo:
    reader: VideoReader
    stop: threading.Event  # set: the reader yields no further frame


def _side(spec: ModelSpec) -> str:
    # Classification resizes the shorter side to imgsz; the other tasks the longer one.
    return "short" if spec.task == "classify" else "long"


def _metadata(
    prediction: Prediction, count: int, elapsed_s: float, video: dict[str, Any] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "imageCount": count,
        "functionTimeCall": round(elapsed_s, 4),
        "model": prediction["model"],
        "version": prediction["versions"],
        # Fields the official SDK reads beside the spec's.
        "task": prediction["task"],
        "classNames": list(prediction["names"]),
    }
    if video is not None:
        metadata["video"] = video
    return metadata


def _video_metadata(info: VideoInfo, params: PredictParams) -> dict[str, Any]:
    return {
        "container": info.container,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "fps": None if info.fps is None else round(info.fps, 3),
        "vidStride": params.vid_stride,
    }


def _reduced_for_model(image: np.ndarray, spec: ModelSpec, imgsz: int) -> np.ndarray:
    """What the JSON path would give the model for a large image: a reduced copy."""
    height, width = image.shape[:2]
    factor = draft_factor(width, height, imgsz, _side(spec))
    if factor <= 1:
        return image
    size = (math.ceil(width / factor), math.ceil(height / factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class PredictRoutes:
    """The predict handlers' shared path (mixed into IngressApp)."""

    def _upload_limits(self: IngressApp, video: bool) -> UploadLimits:
        return UploadLimits(
            image_bytes=self.limit_bytes,
            video_bytes=int(self.config.max_video_mb * MB) if video else None,
        )

    async def _predict(
        self: IngressApp,
        request: Request,
        admission: Admission,
        spec: ModelSpec,
        handle: DeploymentHandle | None = None,
        *,
        video: bool = False,
    ) -> Response:
        """`video`: the route takes video (a dedicated endpoint's)."""
        timer = PhaseTimer()
        output = negotiate(request.headers.get("accept"))
        upload = await read_upload(request, self._upload_limits(video), self.url_sources)
        # What holds the upload's resources, released once the answer is sent (by the stream
        # itself for NDJSON).
        closing: list[Callable[[], Any]] = [upload.close]
        streaming = False
        try:
            params = parse_params(upload.fields, default_imgsz=spec.imgsz or 640)
            timer.mark("upload")
            model = handle or self.model
            if upload.video is not None:
                if output in IMAGE_OUTPUTS:
                    raise ApiError(406, "Annotated output is for images: ask a video for JSON")
                # Opened (and checked) before any answer starts: a bad video is a 400 even
                # when the answer would have streamed.
                reader = await self._open_video(upload.video, params)
                closing.append(reader.reader.close)
                frames = self._video_entries(reader, spec, model, params)
                video_meta = _video_metadata(reader.reader.info, params)
                if output == NDJSON:
                    streaming = True
                    return self._streamed(frames, admission, timer, closing, video_meta)
                return await self._collected(frames, admission, timer, video_meta)
            admission = await self.gate.count_images(admission, len(upload.images))
            attach_limit_headers(request, admission.headers)
            if output in IMAGE_OUTPUTS:
                if len(upload.images) > 1:
                    raise ApiError(406, "Annotated output is one image per request")
                return await self._annotated(upload.images[0], spec, model, params, output)
            entries = self._image_entries(upload.images, spec, model, params)
            if output == NDJSON:
                streaming = True
                return self._streamed(entries, admission, timer, closing)
            if len(upload.images) == 1:
                return await self._single(upload.images[0], spec, model, params, admission, timer)
            return await self._collected(entries, admission, timer)
        finally:
            if not streaming:
                await _close(closing)

    # -- images ---------------------------------------------------------------------------------
    async def _decoded(
        self: IngressApp, data: bytes, spec: ModelSpec, params: PredictParams, full: bool = False
    ) -> DecodedImage:
        """Decoded under the budget: its header-derived peak is reserved before any pixel is
        decoded, so concurrent large images wait for their share (or get a 503), never an
        OOM. In a thread: opening some headers takes milliseconds. `full`: never reduced."""
        target = None if full else params.imgsz
        peak = await asyncio.to_thread(
            decode_peak_bytes, data, target_size=target, target_side=_side(spec)
        )
        async with self.decode_budget.reserve(peak):
            # An image far larger than the model's input decodes reduced (libjpeg's scaled
            # decoding for JPEGs); shape_results maps results back to the original's pixels.
            return await asyncio.to_thread(
                decode_image, data, target_size=target, target_side=_side(spec)
            )

    async def _image_prediction(
        self: IngressApp,
        data: bytes,
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
        timer: PhaseTimer | None = None,
    ) -> tuple[Entry, Prediction]:
        image = await self._decoded(data, spec, params)
        decode_s = timer.mark("decode") if timer else 0.0
        self.metrics.image_decoded(image.format, decode_s)
        prediction = await model_calls.predict(
            model, spec.id, image.array, params, self.config.model_timeout_s
        )
        if timer:
            timer.mark("model")
        results = shape_results(prediction, image.shape, image.array.shape[:2], params)
        return Entry(image.shape, results, prediction["speed"]), prediction

    async def _image_entries(
        self: IngressApp,
        images: list[bytes],
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
    ) -> AsyncIterator[tuple[Entry, Prediction]]:
        """Every image at the model at once (their batches fill), answered in the order sent."""
        tasks = [
            asyncio.ensure_future(self._image_prediction(data, spec, model, params))
            for data in images
        ]
        try:
            for task in tasks:
                yield await task
        finally:
            for task in tasks:
                task.cancel()

    async def _single(
        self: IngressApp,
        data: bytes,
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
        admission: Admission,
        timer: PhaseTimer,
    ) -> Response:
        """One image, the common case: its phases timed one by one in Server-Timing."""
        entry, prediction = await self._image_prediction(data, spec, model, params, timer)
        body = {
            "images": [entry.wire()],
            "metadata": _metadata(prediction, 1, timer.elapsed()),
        }
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

    async def _annotated(
        self: IngressApp,
        data: bytes,
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
        output: Output,
    ) -> Response:
        image = await self._decoded(data, spec, params, full=True)
        self.metrics.image_decoded(image.format, 0.0)
        array = await asyncio.to_thread(_reduced_for_model, image.array, spec, params.imgsz)
        prediction = await model_calls.predict(
            model, spec.id, array, params, self.config.model_timeout_s
        )
        # Drawn in pixels whatever `normalize` asked: the drawing is of this very image.
        pixels = dataclasses.replace(params, normalize=False)
        results = shape_results(prediction, image.shape, array.shape[:2], pixels)
        encoded = await asyncio.to_thread(_draw, image.array, results, prediction["task"], output)
        return Response(encoded, media_type=output)

    # -- video ----------------------------------------------------------------------------------
    async def _open_video(self: IngressApp, file: BinaryIO, params: PredictParams) -> OpenVideo:
        stop = threading.Event()
        reader = await asyncio.to_thread(
            VideoReader,
            file,
            stride=params.vid_stride,
            max_frames=self.config.max_video_frames,
            stop=stop,
        )
        return OpenVideo(reader, stop)

    async def _video_entries(
        self: IngressApp,
        video: OpenVideo,
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
    ) -> AsyncIterator[tuple[Entry, Prediction]]:
        """Each processed frame's entry, in order, with at most `video_frames_in_flight`
        frames at the model and one being decoded."""
        frames = iter(video.reader)
        in_flight = self.config.video_frames_in_flight
        # The declared size (a stream may declare none: then a 1080p frame's). A frame that
        # turns out larger is still bounded by the reader's pixel limit.
        pixels = video.reader.info.width * video.reader.info.height or 1920 * 1080
        frame_bytes = pixels * 3
        pending: deque[asyncio.Future[tuple[Entry, Prediction]]] = deque()
        reading: asyncio.Future[VideoFrame | None] | None = None
        try:
            async with self.decode_budget.reserve((in_flight + _DECODE_AHEAD) * frame_bytes):
                while True:
                    reading = asyncio.ensure_future(asyncio.to_thread(next, frames, None))
                    frame = await reading
                    reading = None
                    if frame is None:
                        break
                    self.metrics.video_frame()
                    pending.append(
                        asyncio.ensure_future(self._frame_prediction(frame, spec, model, params))
                    )
                    if len(pending) >= in_flight:
                        yield await pending.popleft()
                while pending:
                    yield await pending.popleft()
        finally:
            video.stop.set()
            for task in pending:
                task.cancel()
            if reading is not None:
                # The worker thread finishes its frame and sees `stop`; FFmpeg's state is
                # released (reader.close) only after that, never under a running decode.
                with contextlib.suppress(Exception):
                    await asyncio.shield(reading)

    async def _frame_prediction(
        self: IngressApp,
        frame: VideoFrame,
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
    ) -> tuple[Entry, Prediction]:
        prediction = await model_calls.predict(
            model, spec.id, frame.image, params, self.config.model_timeout_s
        )
        shape = frame.image.shape[:2]
        results = shape_results(prediction, shape, shape, params)
        return Entry(shape, results, prediction["speed"], frame), prediction

    # -- answers --------------------------------------------------------------------------------
    async def _collected(
        self: IngressApp,
        entries: AsyncIterator[tuple[Entry, Prediction]],
        admission: Admission,
        timer: PhaseTimer,
        video: dict[str, Any] | None = None,
    ) -> Response:
        wired: list[dict[str, Any]] = []
        first: Prediction | None = None
        async for entry, prediction in entries:
            wired.append(entry.wire())
            first = first or prediction
        if first is None:
            raise ApiError(400, NO_FRAMES)
        metadata = _metadata(first, len(wired), timer.elapsed(), video)
        response = JSONResponse({"images": wired, "metadata": metadata}, headers=admission.headers)
        timer.mark("predict")
        response.headers["Server-Timing"] = timer.header()
        return response

    def _streamed(
        self: IngressApp,
        entries: AsyncIterator[tuple[Entry, Prediction]],
        admission: Admission,
        timer: PhaseTimer,
        closing: list[Callable[[], Any]],
        video: dict[str, Any] | None = None,
    ) -> Response:
        """One line per entry as each is ready, then `{"metadata": ...}`; a failure midway
        (the status is sent by then) is a last line `{"error": ...}`. A client that leaves
        ends the generator, and with it the decoding."""

        async def lines() -> AsyncIterator[bytes]:
            count = 0
            first: Prediction | None = None
            try:
                async for entry, prediction in entries:
                    count += 1
                    first = first or prediction
                    yield _line(entry.wire())
                if first is None:
                    yield _line({"error": NO_FRAMES})
                    return
                yield _line({"metadata": _metadata(first, count, timer.elapsed(), video)})
            except ApiError as exc:
                yield _line({"error": exc.message})
            finally:
                await entries.aclose()
                await _close(closing)

        return StreamingResponse(lines(), media_type=NDJSON, headers=admission.headers)


async def _close(closing: list[Callable[[], Any]]) -> None:
    """Release in reverse order of taking; a video reader's close runs in a thread (FFmpeg)."""
    for close in reversed(closing):
        result = await asyncio.to_thread(close) if not _is_async(close) else await close()
        del result


def _is_async(function: Callable[[], Any]) -> bool:
    return inspect.iscoroutinefunction(function)


def _line(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _draw(image: np.ndarray, results: list[dict[str, Any]], task: str, output: Output) -> bytes:
    return annotate.encode(annotate.annotate(image, results, task), output)  # type: ignore[arg-type]

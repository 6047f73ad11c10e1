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
import functools
import json
import math
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio
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
from shared.letterbox import letterbox_resize, letterbox_target
from shared.memory_budget import MB
from shared.negotiation import IMAGE_OUTPUTS, NDJSON, Output, negotiate
from shared.params import PredictParams, parse_params
from shared.registry import ModelSpec
from shared.results import Prediction, image_entry, response_metadata, shape_results
from shared.timing import PhaseTimer
from shared.video import VideoFrame, VideoInfo, VideoReader

if TYPE_CHECKING:
    from deployments.ingress import IngressApp

# Frames beside those at the model whose memory a video reserves: the one being decoded, and
# the one being converted to RGB.
_DECODE_AHEAD = 2
NO_FRAMES = "Invalid video: no frame could be decoded"
UNDECLARED_PIXELS = 3840 * 2160  # the frame size a stream that declares none is held to


@dataclass(frozen=True)
class Entry:
    """One `images[]` entry: an image's (or a frame's) shaped results."""

    shape: tuple[int, int]
    results: list[dict[str, Any]]
    speed: dict[str, float]
    frame: VideoFrame | None = None

    def wire(self) -> dict[str, Any]:
        body = image_entry(self.shape, self.results, self.speed)
        if self.frame is not None:
            body["frame"] = self.frame.index
            body["timestamp"] = self.frame.timestamp
        return body


@dataclass(frozen=True)
class OpenVideo:
    reader: VideoReader
    stop: threading.Event  # set: the reader yields no further frame
    in_flight: int  # its frames at the model at once


def _side(spec: ModelSpec) -> str:
    # Classification resizes the shorter side to imgsz; the other tasks the longer one.
    return "short" if spec.task == "classify" else "long"


def _metadata(
    prediction: Prediction, count: int, elapsed_s: float, video: dict[str, Any] | None = None
) -> dict[str, Any]:
    # Fields the official SDK reads beside the spec's, and what was read of a video.
    extra: dict[str, Any] = {"task": prediction["task"], "classNames": list(prediction["names"])}
    if video is not None:
        extra["video"] = video
    return response_metadata(
        count,
        model_file=prediction["model"],
        versions=prediction["versions"],
        elapsed_s=elapsed_s,
        extra_metadata=extra,
    )


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
    """What the JSON path would give the model for a large image: a reduced copy, then the
    letterbox resize."""
    height, width = image.shape[:2]
    factor = draft_factor(width, height, imgsz, _side(spec))
    if factor > 1:
        size = (math.ceil(width / factor), math.ceil(height / factor))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return letterbox_resize(image, spec.task, imgsz)


def _decode_for_model(data: bytes, spec: ModelSpec, imgsz: int | None) -> DecodedImage:
    """Decoded and, for the model, letterbox-resized as Ultralytics would (shared/letterbox.py);
    `shape` stays the original's, so results map back to its pixels."""
    image = decode_image(data, target_size=imgsz, target_side=_side(spec))
    if imgsz is None:
        return image
    return dataclasses.replace(image, array=letterbox_resize(image.array, spec.task, imgsz))


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
        # What this answer holds (the spooled upload, a video's reader, its slot and memory),
        # released once the answer is sent: by the stream itself for NDJSON.
        resources = contextlib.AsyncExitStack()
        resources.push_async_callback(upload.close)
        streaming = False
        try:
            params = parse_params(upload.fields, default_imgsz=spec.imgsz or 640)
            timer.mark("upload")
            model = handle or self.model
            if upload.video is not None:
                if output in IMAGE_OUTPUTS:
                    raise ApiError(406, "Annotated output is for images: ask a video for JSON")
                # Opened, checked and given its memory before any answer starts: a bad video
                # is a 400, and no room a 503, even when the answer would have streamed.
                opened = await self._open_video(upload.video, params, resources)
                frames = self._video_entries(opened, spec, model, params)
                video_meta = _video_metadata(opened.reader.info, params)
                if output == NDJSON:
                    streaming = True
                    return await self._streamed(frames, admission, timer, resources, video_meta)
                return await self._collected(frames, admission, timer, video_meta)
            if output in IMAGE_OUTPUTS and len(upload.images) > 1:
                raise ApiError(406, "Annotated output is one image per request")
            admission = await self.gate.count_images(admission, len(upload.images))
            attach_limit_headers(request, admission.headers)
            if output in IMAGE_OUTPUTS:
                image = upload.images[0]
                return await self._annotated(image, spec, model, params, output, admission)
            if output == NDJSON:
                entries = self._image_entries(upload.images, spec, model, params)
                streaming = True
                return await self._streamed(entries, admission, timer, resources)
            if len(upload.images) == 1:
                return await self._single(upload.images[0], spec, model, params, admission, timer)
            entries = self._image_entries(upload.images, spec, model, params)
            return await self._collected(entries, admission, timer)
        finally:
            if not streaming:
                await resources.aclose()

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
            return await asyncio.to_thread(_decode_for_model, data, spec, target)

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
        admission: Admission,
    ) -> Response:
        """Decoded at full size; the model gets it reduced as the JSON path would. The decode's
        peak is reserved twice over for the whole answer: the image stays alive through the
        model call, beside its drawn copy and the encoder's."""
        peak = await asyncio.to_thread(decode_peak_bytes, data, target_side=_side(spec))
        async with self.decode_budget.reserve(2 * peak):
            image = await asyncio.to_thread(decode_image, data, target_side=_side(spec))
            self.metrics.image_decoded(image.format, 0.0)
            array = await asyncio.to_thread(_reduced_for_model, image.array, spec, params.imgsz)
            prediction = await model_calls.predict(
                model, spec.id, array, params, self.config.model_timeout_s
            )
            # Drawn in pixels whatever `normalize` asked: the drawing is of this very image.
            pixels = dataclasses.replace(params, normalize=False)
            results = shape_results(prediction, image.shape, array.shape[:2], pixels)
            encoded = await asyncio.to_thread(
                _draw, image.array, results, prediction["task"], output
            )
        return Response(encoded, media_type=output, headers=admission.headers)

    # -- video ----------------------------------------------------------------------------------
    async def _open_video(
        self: IngressApp,
        file: BinaryIO,
        params: PredictParams,
        resources: contextlib.AsyncExitStack,
    ) -> OpenVideo:
        """A slot among the replica's `max_concurrent_videos` (none free: a 503 at once), the
        reader, and the memory of the frames it may hold, all released with `resources`."""
        if self.video_slots.locked():
            raise ApiError(
                503,
                f"Busy: {self.config.max_concurrent_videos} videos are being processed here; "
                "retry shortly",
                {"Retry-After": "5"},
            )
        await resources.enter_async_context(self.video_slots)
        stop = threading.Event()
        reader = await self._in_video_thread(
            functools.partial(
                VideoReader,
                file,
                stride=params.vid_stride,
                max_frames=self.config.max_video_frames,
                stop=stop,
            )
        )
        resources.push_async_callback(self._in_video_thread, reader.close)
        resources.callback(stop.set)  # first: a decode running then ends at its next packet
        info = reader.info
        # Frames are held to the size the stream declares (larger ones are a 400), so the
        # memory reserved here is what they take; a stream that declares none is held to 4K.
        reader.max_pixels = min(reader.max_pixels, info.width * info.height or UNDECLARED_PIXELS)
        frame_bytes = reader.max_pixels * 3
        # Up to video_frames_in_flight at the model, fewer for large frames: a video takes at
        # most a quarter of the replica's decode budget.
        share = self.decode_budget.total // 4 // frame_bytes - _DECODE_AHEAD
        in_flight = max(1, min(self.config.video_frames_in_flight, share))
        await resources.enter_async_context(
            self.decode_budget.reserve((in_flight + _DECODE_AHEAD) * frame_bytes)
        )
        return OpenVideo(reader, stop, in_flight)

    async def _in_video_thread(self: IngressApp, call: Callable[[], Any]) -> Any:
        # The replica's own small pool (one thread per video slot): decoding a video never
        # takes the threads image decodes run in.
        return await asyncio.get_running_loop().run_in_executor(self.video_threads, call)

    async def _video_entries(
        self: IngressApp,
        video: OpenVideo,
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
    ) -> AsyncIterator[tuple[Entry, Prediction]]:
        """Each processed frame's entry, in order, with at most `video.in_flight` frames at
        the model and one being decoded. The reader's lock keeps a cancelled request from
        closing it under a running decode."""
        pending: deque[asyncio.Future[tuple[Entry, Prediction]]] = deque()
        try:
            while True:
                frame = await self._in_video_thread(video.reader.next_frame)
                if frame is None:
                    break
                self.metrics.video_frame()
                pending.append(
                    asyncio.ensure_future(self._frame_prediction(frame, spec, model, params))
                )
                if len(pending) >= video.in_flight:
                    yield await pending.popleft()
            while pending:
                yield await pending.popleft()
        finally:
            video.stop.set()
            for task in pending:
                task.cancel()

    async def _frame_prediction(
        self: IngressApp,
        frame: VideoFrame,
        spec: ModelSpec,
        model: DeploymentHandle,
        params: PredictParams,
    ) -> tuple[Entry, Prediction]:
        array = frame.image
        if letterbox_target(array.shape, spec.task, params.imgsz) is not None:
            array = await asyncio.to_thread(letterbox_resize, array, spec.task, params.imgsz)
        prediction = await model_calls.predict(
            model, spec.id, array, params, self.config.model_timeout_s
        )
        shape = frame.image.shape[:2]
        results = shape_results(prediction, shape, array.shape[:2], params)
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

    async def _streamed(
        self: IngressApp,
        entries: AsyncIterator[tuple[Entry, Prediction]],
        admission: Admission,
        timer: PhaseTimer,
        resources: contextlib.AsyncExitStack,
        video: dict[str, Any] | None = None,
    ) -> Response:
        """One line per entry as each is ready, then `{"metadata": ...}`. The first entry is
        awaited before the answer starts, so a request that fails at once gets its real
        status; a failure midway (the 200 is sent by then) is a last line `{"error": ...}`.
        A client that leaves ends the generator, and with it the decoding."""
        try:
            first_entry, first = await anext(entries)
        except StopAsyncIteration:
            raise ApiError(400, NO_FRAMES) from None

        async def lines() -> AsyncIterator[bytes]:
            count = 1
            try:
                yield _line(first_entry.wire())
                async for entry, _ in entries:
                    count += 1
                    yield _line(entry.wire())
                yield _line({"metadata": _metadata(first, count, timer.elapsed(), video)})
            except ApiError as exc:
                yield _line({"error": exc.message})
            finally:
                # Starlette cancels a stream whose client left: the releases must still run.
                with anyio.CancelScope(shield=True):
                    await entries.aclose()
                    await resources.aclose()

        return StreamingResponse(lines(), media_type=NDJSON, headers=admission.headers)


def _line(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _draw(image: np.ndarray, results: list[dict[str, Any]], task: str, output: Output) -> bytes:
    return annotate.encode(annotate.annotate(image, results, task), output)  # type: ignore[arg-type]

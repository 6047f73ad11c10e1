"""Test videos: real small files of every accepted container, made from the real `bus.jpg`.

Each frame is the bus shifted a few pixels further right than the one before, so frames differ
and their order shows. The writers are what users' tools use: OpenCV's `VideoWriter` for MP4
(`mp4v`) and AVI (`MJPG`), PyAV (FFmpeg's muxers and encoders) for the rest.
`decoded_frames` is the independent oracle: the RGB frames a server should see for a file.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache

import av
import cv2
import numpy as np
from PIL import Image

from shared.assets import example_image

SHIFT_PX = 4  # how far each frame moves the bus


@dataclass(frozen=True)
class Writer:
    """How one container's test video is made: by `tool`, in FFmpeg's `muxer`, as `codec`."""

    tool: str  # "opencv" or "pyav"
    muxer: str  # FFmpeg's muxer name (for OpenCV, the file extension it picks the muxer by)
    codec: str  # the encoder (for OpenCV, the fourcc)
    pix_fmt: str = "yuv420p"
    options: dict[str, str] = field(default_factory=dict)  # the encoder's
    container_options: dict[str, str] = field(default_factory=dict)  # the muxer's
    frame_counted: bool = False  # the container states its frame count (FFmpeg's nb_frames)


# One writer for each of the 12 containers the API accepts (shared.video.VIDEO_CONTAINERS).
# MPEG-1/2 allow only the broadcast frame rates unless told to be unofficial ("strict": "-1").
_MPEG = {"strict": "-1"}
WRITERS: dict[str, Writer] = {
    "asf": Writer("pyav", "asf", "msmpeg4"),
    "avi": Writer("opencv", "avi", "MJPG", frame_counted=True),
    "gif": Writer("pyav", "gif", "gif", pix_fmt="rgb8"),  # 3-3-2 colours: FFmpeg's own palette
    "m4v": Writer("pyav", "mp4", "mpeg4", container_options={"brand": "M4V "}, frame_counted=True),
    "mkv": Writer("pyav", "matroska", "libx264", options={"preset": "ultrafast", "bf": "2"}),
    "mov": Writer("pyav", "mov", "libx264", options={"preset": "ultrafast"}, frame_counted=True),
    "mp4": Writer("opencv", "mp4", "mp4v", frame_counted=True),
    "mpeg": Writer("pyav", "mpeg", "mpeg1video", options=_MPEG),
    "mpg": Writer("pyav", "mpeg", "mpeg2video", options=_MPEG),
    "ts": Writer("pyav", "mpegts", "mpeg2video", options=_MPEG),
    "webm": Writer("pyav", "webm", "libvpx", options={"deadline": "realtime", "cpu-used": "8"}),
    "wmv": Writer("pyav", "asf", "wmv2"),
}
CONTAINERS = tuple(WRITERS)


@cache
def _bus() -> np.ndarray:
    with Image.open(example_image("bus.jpg")) as image:
        return np.asarray(image.convert("RGB"))


def bus_frames(frames: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """`frames` RGB frames of `size` (width, height): the bus, SHIFT_PX further right in each
    (wrapping round after a while), so consecutive frames differ."""
    width, height = size
    pad = max(2 * SHIFT_PX, min(SHIFT_PX * frames, width // 2))
    base = cv2.resize(_bus(), (width + pad, height), interpolation=cv2.INTER_AREA)
    for index in range(frames):
        x = pad - (SHIFT_PX * index) % (pad + 1)
        yield np.ascontiguousarray(base[:, x : x + width])


def bus_video(
    container: str = "mp4",
    frames: int = 12,
    fps: float = 10,
    size: tuple[int, int] = (640, 480),
    rotation: int = 0,
) -> bytes:
    """A video file of `frames` frames of the bus (see bus_frames) at `fps`, `size` = (width,
    height) (even numbers: most encoders want them), in `container` (a key of WRITERS).
    `rotation` (degrees counter-clockwise) is written as a phone does, as the stream's display
    matrix; the pixels stay as they are (PyAV's writers only: MOV, M4V, MKV...)."""
    writer = WRITERS[container]
    images = bus_frames(frames, size)
    if writer.tool == "opencv":
        if rotation:
            raise ValueError(f"{container} is written by OpenCV, which writes no rotation")
        return _opencv(writer, images, fps, size)
    return _pyav(writer, images, fps, size, rotation)


def _opencv(
    writer: Writer, images: Iterator[np.ndarray], fps: float, size: tuple[int, int]
) -> bytes:
    handle, path = tempfile.mkstemp(suffix=f".{writer.muxer}")
    os.close(handle)
    try:
        out = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*writer.codec), float(fps), size)
        if not out.isOpened():
            raise RuntimeError(f"OpenCV cannot write {writer.codec} in .{writer.muxer}")
        for image in images:
            out.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        out.release()
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.unlink(path)


def _pyav(
    writer: Writer,
    images: Iterator[np.ndarray],
    fps: float,
    size: tuple[int, int],
    rotation: int = 0,
) -> bytes:
    buffer = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(
        buffer, mode="w", format=writer.muxer, container_options=writer.container_options
    ) as out:
        stream = out.add_stream(writer.codec, rate=rate, options=writer.options)
        stream.width, stream.height = size
        stream.pix_fmt = writer.pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        for image in images:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def decoded_frames(data: bytes) -> list[np.ndarray]:
    """Every frame of the first video stream of `data`, as PyAV decodes and converts it:
    (H, W, 3) RGB uint8, in presentation order. What a server should see for the file."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]

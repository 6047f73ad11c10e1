"""Video files -> RGB frames, streamed one at a time with PyAV (FFmpeg), for dedicated endpoints.

Runs in a worker thread of the ingress, which never imports torch or ultralytics. The upload
(a spooled file, up to the video limit) is demuxed and decoded packet by packet: only the frame
being converted, FFmpeg's decoder buffers (a few frames with frame threading) and the frames the
caller still holds are in memory, never the whole video. Frames the stride skips are decoded
(later frames depend on them) but never converted to RGB, which is most of the cost.

Frames come as stored: a phone's rotation metadata (the display matrix) is not applied, which
would copy every frame once more; boxes are in the stored frame's pixels.

Hostile input ends in an ApiError 400, never another exception, a hang or unbounded memory:
only the demuxers of the accepted containers may open the file, FFmpeg's probing is bounded,
sizes and frame counts are checked from the headers before decoding and again per frame, and
the decoder refuses frames over the pixel limit before allocating them (FFmpeg's own index of
the packets grows with the file, which the upload limit bounds). Damaged data is skipped:
a packet the decoder refuses is dropped (up to MAX_BAD_PACKETS in a row, after which the rest
of the file is given up), a demuxing error (a truncated or garbled file) ends the video there,
and a video of which no frame decodes at all is a 400. So a truncated upload gives its frames
up to the cut. Frame indexes count the frames that decoded.
"""

from __future__ import annotations

import io
import math
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import av
import av.error
import numpy as np

from shared.errors import ApiError, bad_request

VIDEO_CONTAINERS: tuple[str, ...] = (
    "ASF",
    "AVI",
    "GIF",
    "M4V",
    "MKV",
    "MOV",
    "MP4",
    "MPEG",
    "MPG",
    "TS",
    "WEBM",
    "WMV",
)
MAX_FRAMES = 3000  # frames processed (after the stride) in one request
MAX_PIXELS = 4096 * 4096 * 2  # 33.5 MP a frame: 8K UHD (7680 x 4320) fits
MAX_BAD_PACKETS = 256  # packets in a row the decoder refuses before the rest is given up
DECODER_SLACK_PIXELS = 1 << 17  # beyond 9/8 of max_pixels: small frames are padded most
DEFAULT_FPS = 25.0  # for timestamps when a stream has neither timestamps nor a frame rate
INVALID = "Invalid video: unsupported or corrupt file"

# FFmpeg's demuxers for the accepted containers, and no other (no playlists, no concat, no
# image sequences): "mov" is MP4/MOV/M4V, "mpegvideo" an MPEG-1/2 elementary stream.
DEMUXERS = "mov,matroska,avi,asf,gif,mpeg,mpegts,mpegvideo"
_CONTAINER_OPTIONS = {
    "format_whitelist": DEMUXERS,
    "protocol_whitelist": "none",  # a file object needs no protocol; nothing may open another
    "probesize": "5000000",  # bytes read to find the streams (FFmpeg's default, set explicitly)
    "analyzeduration": str(5_000_000),  # microseconds of it (FFmpeg's default, set explicitly)
    "max_streams": "64",  # FFmpeg allows 1000, each with its decoder context
}
# What PyAV and FFmpeg raise for bad data: FFmpeg's errors (av.error.FFmpegError, some of them
# also OSError, ValueError or EOFError), and PyAV's own ValueError/RuntimeError (an unknown
# codec, undecodable metadata).
_AV_ERRORS = (av.error.FFmpegError, OSError, ValueError, EOFError, RuntimeError, OverflowError)

# -- sniffing --------------------------------------------------------------------------------
_ASF = bytes.fromhex("3026B2758E66CF11")
_EBML = bytes.fromhex("1A45DFA3")
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip")
# ISO BMFF brands of still images (HEIF, AVIF, their sequences): the image decoder's, not ours.
_IMAGE_BRANDS = frozenset(
    (
        *(b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"heif"),
        *(b"mif1", b"mif2", b"msf1", b"miaf", b"avif", b"avis", b"avio", b"avci", b"avcs"),
        *(b"MA1A", b"MA1B", b"jpeg", b"jpgs", b"jp2 ", b"jpx ", b"jpm ", b"crx "),
    )
)
# Brands of video files, which decide when a file lists image brands too.
_VIDEO_BRANDS = frozenset(
    (
        *(b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9"),
        *(b"mp41", b"mp42", b"mp71", b"avc1", b"qt  ", b"M4V ", b"M4VH", b"M4VP", b"mmp4"),
        *(b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gp8", b"3gp9", b"3g2a", b"3g2b", b"3g2c"),
        *(b"MSNV", b"dash", b"f4v ", b"XAVC"),
    )
)


def sniff_video(head: bytes) -> str | None:
    """The container (a VIDEO_CONTAINERS name) a file's first bytes announce, or None.

    From magic bytes only, without FFmpeg; `head` should hold the first 512 bytes (or the whole
    file if shorter). ASF/WMV are one container and sniff as "ASF", MPEG program and elementary
    streams as "MPEG". HEIF and AVIF images are ISO BMFF like MP4: they sniff as None.
    """
    if head.startswith(_ASF):
        return "ASF"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(_EBML):
        return "WEBM" if _ebml_doctype(head) == b"webm" else "MKV"
    if head[4:8] == b"ftyp":
        return _iso_bmff(head)
    if head[4:8] in _QUICKTIME_ATOMS:
        return "MOV"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "MPEG"
    if len(head) > 188 and head[0] == head[188] == 0x47 and (len(head) <= 376 or head[376] == 0x47):
        return "TS"
    return None


def _iso_bmff(head: bytes) -> str | None:
    (size,) = struct.unpack(">I", head[:4])
    major = head[8:12]
    # The compatible brands follow the minor version; a size of 0 or 1 means "to the end" or a
    # 64-bit size, where whatever of the head there is gets read.
    end = min(len(head), size if size >= 16 else len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _IMAGE_BRANDS or (major not in _VIDEO_BRANDS and compatible & _IMAGE_BRANDS):
        return None
    if major == b"qt  ":
        return "MOV"
    if major in (b"M4V ", b"M4VH", b"M4VP"):
        return "M4V"
    return "MP4"


def _ebml_doctype(head: bytes) -> bytes | None:
    """The DocType (b"webm", b"matroska") of the EBML header at the start of `head`."""
    at = head.find(b"\x42\x82", 4, 64)
    if at < 0 or at + 2 >= len(head):
        return None
    size = head[at + 2]
    if not size & 0x80:  # a one-byte size, as every muxer writes it
        return None
    return head[at + 3 : at + 3 + (size & 0x7F)]


# -- reading ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    container: str  # FFmpeg's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # FFmpeg's decoder name, e.g. "h264"
    width: int  # as the stream declares it (0 when it does not)
    height: int
    fps: float | None  # average frame rate when known
    frames: int | None  # the stream's frame count when the container states it


@dataclass(frozen=True)
class VideoFrame:
    index: int  # 0-based index of the frame among those decoded, in presentation order
    timestamp: float  # seconds from the stream's start, to 3 decimals
    image: np.ndarray  # (H, W, 3) RGB uint8, C-contiguous, as stored (no rotation applied)


def too_long(max_frames: int, stride: int) -> ApiError:
    return bad_request(
        f"Video too long: more than {max_frames} frames to process at vid_stride {stride}; "
        "send a shorter video or a larger vid_stride"
    )


def too_large(width: int, height: int, max_pixels: int) -> ApiError:
    return bad_request(
        f"Video frames too large: {width}x{height}, more than {max_pixels} pixels a frame"
    )


class VideoReader:
    """Every `stride`-th frame (0, stride, 2 * stride, ...) of the first video stream of `source`.

    `source` is a binary file object (read from its start; left open) or a path. Opening reads
    the headers and raises ApiError 400 for a file that is not a video of an accepted container,
    has no video stream, declares frames over `max_pixels`, or states more frames than
    `max_frames` to process at `stride`. Iterating (once) yields VideoFrame's, and raises 400
    when a frame is over `max_pixels`, when frame `max_frames` + 1 would be yielded, or when
    no frame decodes at all; it ends early, quietly, once `stop` is set. `threads` is the
    decoder's. `close()` (or leaving the `with` block) frees FFmpeg's resources. Iterate and
    close in one thread, or use `next_frame()`, which any thread may call: it and `close()`
    take one lock, so FFmpeg's state is never freed under a running decode (that crashes the
    process). Another thread ends the frames by setting `stop`.
    """

    def __init__(
        self,
        source: BinaryIO | str | os.PathLike[str],
        *,
        stride: int = 1,
        max_frames: int = MAX_FRAMES,
        max_pixels: int = MAX_PIXELS,
        stop: threading.Event | None = None,
        threads: int = 2,
    ) -> None:
        if stride < 1 or max_frames < 1 or max_pixels < 1 or threads < 1:
            raise ValueError("stride, max_frames, max_pixels and threads must be positive")
        self.stride = stride
        self.max_frames = max_frames
        self.max_pixels = max_pixels
        self._stop = stop
        self._iterated = False
        self._own_file: BinaryIO | None = None
        self._container: av.container.InputContainer | None = None
        self._lock = threading.Lock()
        self._next: Iterator[VideoFrame] | None = None
        if isinstance(source, str | os.PathLike):
            # Opened here, not by FFmpeg: a name is never taken for a URL or a protocol.
            self._own_file = source = open(Path(source), "rb")  # noqa: SIM115 (closed by close)
        try:
            self._stream = self._open(source, threads)
        except ApiError:
            self._close()
            raise
        except _AV_ERRORS as exc:
            self._close()
            raise bad_request(INVALID) from exc

    def _open(self, source: BinaryIO, threads: int) -> av.video.stream.VideoStream:
        if source.seekable():
            source.seek(0)
        self._container = container = av.open(
            source, mode="r", container_options=_CONTAINER_OPTIONS
        )
        stream = _video_stream(container)
        for other in container.streams:
            if other.index != stream.index:
                other.discard = "all"  # their packets are dropped by the demuxer
        context = stream.codec_context
        rate = stream.average_rate
        self.info = VideoInfo(
            container=container.format.name,
            codec=context.name,
            width=max(context.width, 0),
            height=max(context.height, 0),
            fps=float(rate) if rate is not None and rate > 0 else None,
            frames=stream.frames if stream.frames > 0 else None,
        )
        if self.info.width * self.info.height > self.max_pixels:
            raise too_large(self.info.width, self.info.height, self.max_pixels)
        if self.info.frames and math.ceil(self.info.frames / self.stride) > self.max_frames:
            raise too_long(self.max_frames, self.stride)
        context.thread_type = "AUTO"
        context.thread_count = threads
        # The decoder refuses larger frames before allocating them (FFmpeg allows 2^31 pixels).
        # It checks the size padded to the codec's blocks: the slack lets the frames this
        # module then checks exactly through.
        decoder_limit = self.max_pixels + self.max_pixels // 8 + DECODER_SLACK_PIXELS
        context.options = {**(context.options or {}), "max_pixels": str(decoder_limit)}
        self._start = stream.start_time or 0
        self._time_base = stream.time_base
        return stream

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._container is None:
            raise RuntimeError("the VideoReader is closed")
        if self._iterated:
            raise RuntimeError("a VideoReader is iterated once")
        self._iterated = True
        return self._frames(self._container, self._stream)

    def _frames(self, container: av.container.InputContainer, stream) -> Iterator[VideoFrame]:
        context = stream.codec_context
        stride, stopped = self.stride, self._stopped
        first_too_many = self.max_frames * stride  # the index of frame max_frames + 1
        decoded = bad = 0
        for packet in _packets(container, stream):
            if stopped():
                return
            try:
                frames = context.decode(packet)
            except _AV_ERRORS:
                bad += 1
                if bad > MAX_BAD_PACKETS or packet is None:
                    break
                continue
            for frame in frames:
                bad = 0
                if stopped():
                    return
                if frame.width * frame.height > self.max_pixels:
                    raise too_large(frame.width, frame.height, self.max_pixels)
                index, decoded = decoded, decoded + 1
                if index % stride:
                    continue  # never converted
                if index >= first_too_many:
                    raise too_long(self.max_frames, stride)
                yield VideoFrame(index, self._timestamp(frame.pts, index), _rgb(frame))
        if decoded == 0:
            raise bad_request(INVALID)

    def next_frame(self) -> VideoFrame | None:
        """The next frame, or None at the end (or once closed)."""
        with self._lock:
            if self._container is None:
                return None
            if self._next is None:
                self._next = iter(self)
            return next(self._next, None)

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _timestamp(self, pts: int | None, index: int) -> float:
        if pts is not None and self._time_base is not None:
            seconds = float((pts - self._start) * self._time_base)
        else:
            seconds = index / (self.info.fps or DEFAULT_FPS)
        return round(max(seconds, 0.0), 3)

    def close(self) -> None:
        with self._lock:
            if self._next is not None:
                self._next.close()  # FFmpeg objects in its frames are dropped while it is alive
                self._next = None
            self._close()

    def _close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._own_file is not None:
            self._own_file.close()
            self._own_file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream with a decoder that is not a still (cover art)."""
    streams = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        raise bad_request("Invalid video: no video stream")
    for stream in streams:
        if stream.codec_context is not None:
            return stream
    raise bad_request(INVALID)  # no decoder for its codec


def _packets(container: av.container.InputContainer, stream) -> Iterator[av.Packet | None]:
    """The stream's packets, ending with PyAV's flush packet; where demuxing fails (a cut or
    garbled file) they end there, with None to flush the decoder of the frames it holds."""
    demux = container.demux(stream)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except _AV_ERRORS:
            yield None
            return
        yield packet


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    try:
        image = frame.to_ndarray(format="rgb24")
    except _AV_ERRORS as exc:
        raise bad_request(INVALID) from exc
    return np.ascontiguousarray(image)


def open_video(source: BinaryIO | bytes | str | os.PathLike[str], **kwargs) -> VideoReader:
    """A VideoReader of `source`, where bytes are read from memory (for tests and small files)."""
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    return VideoReader(source, **kwargs)

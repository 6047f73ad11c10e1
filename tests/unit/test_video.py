"""shared.video: sniffing, streaming every container's frames, the limits, and hostile files.

The videos are real (tests.videos: OpenCV and PyAV writers, frames of bus.jpg), small (160 x 120,
12 frames at 10 fps) to keep the file fast. Every corrupt or hostile input must end in frames or
an ApiError(400): anything else would be a 500 (or a hang, which the watchdog turns into a
failure).
"""

from __future__ import annotations

import faulthandler
import io
import itertools
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from shared.assets import example_image
from shared.errors import ApiError
from shared.video import (
    MAX_PIXELS,
    VIDEO_CONTAINERS,
    VideoFrame,
    VideoReader,
    sniff_video,
)
from tests.samples import corruptions, valid_samples
from tests.videos import CONTAINERS, WRITERS, bus_video, decoded_frames

SIZE = (160, 120)  # width, height
FRAMES = 12
FPS = 10
SNIFFED = {"asf": "ASF", "wmv": "ASF", "mpg": "MPEG"}  # one container, two names
CASE_TIMEOUT_S = 60.0  # a hang dumps every thread's stack and ends the run


@cache
def video(container: str) -> bytes:
    return bus_video(container, frames=FRAMES, fps=FPS, size=SIZE)


@cache
def oracle(container: str) -> tuple[np.ndarray, ...]:
    return tuple(decoded_frames(video(container)))


def read(data: bytes, **kwargs) -> list[VideoFrame]:
    with VideoReader(io.BytesIO(data), **kwargs) as reader:
        return list(reader)


@contextmanager
def watchdog(timeout_s: float = CASE_TIMEOUT_S) -> Iterator[None]:
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def frames_or_400(data: bytes, case: str, **kwargs) -> list[VideoFrame] | None:
    """The frames `data` gives (checked for shape and order), or None for an ApiError(400)."""
    try:
        with watchdog():
            frames = read(data, **kwargs)
    except ApiError as exc:
        assert exc.status == 400, f"{case}: {exc.status} {exc.message}"
        return None
    except Exception as exc:  # the test reports every escape, whatever its type
        pytest.fail(f"{case}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
    indexes = [f.index for f in frames]
    assert indexes == sorted(set(indexes)), case
    for frame in frames:
        image = frame.image
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, case
        assert image.flags.c_contiguous and image.size > 0, case
        assert np.isfinite(frame.timestamp) and frame.timestamp >= 0, case
    return frames


# -- sniffing --------------------------------------------------------------------------------
@pytest.mark.parametrize("container", CONTAINERS)
def test_each_container_sniffs_as_itself(container: str) -> None:
    sniffed = sniff_video(video(container)[:512])
    assert sniffed == SNIFFED.get(container, container.upper())
    assert sniffed in VIDEO_CONTAINERS


def _image(fmt: str, **kwargs) -> bytes:
    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    with Image.open(example_image("bus.jpg")) as image:
        image.convert("RGB").resize((64, 48)).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    box = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(box)) + b"ftyp" + box + b"\x00" * 480


NOT_VIDEO = {
    "jpeg": lambda: example_image("bus.jpg").read_bytes(),
    "png": lambda: _image("PNG"),
    "webp": lambda: _image("WEBP"),  # RIFF, but not AVI
    "heic": lambda: _image("HEIF"),
    "bmp": lambda: _image("BMP"),
    "tiff": lambda: _image("TIFF"),
    "heif-mif1-heic": lambda: _ftyp(b"mif1", b"mif1", b"heic"),
    "avif": lambda: _ftyp(b"avif", b"avif", b"mif1", b"miaf"),
    "avif-sequence": lambda: _ftyp(b"avis", b"avis", b"msf1", b"iso8"),
    "unknown-major-image-brands": lambda: _ftyp(b"abcd", b"mif1", b"heic"),
    "random": lambda: np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
    "empty": lambda: b"",
    "one-ts-sync": lambda: b"\x47" + bytes(511),
    "ts-sync-at-0-and-188-not-376": lambda: b"\x47" + bytes(187) + b"\x47" + bytes(323),
    "short-ts-like": lambda: b"\x47" * 100,
    "riff-only": lambda: b"RIFF",
    "ebml-short": lambda: b"\x1a\x45\xdf",
}


@pytest.mark.parametrize("name", NOT_VIDEO)
def test_images_and_noise_are_not_video(name: str) -> None:
    assert sniff_video(NOT_VIDEO[name]()[:512]) is None


@pytest.mark.parametrize("fmt", sorted(valid_samples()))
def test_no_accepted_image_format_sniffs_as_video(fmt: str) -> None:
    assert sniff_video(valid_samples()[fmt][:512]) is None


@pytest.mark.parametrize(
    ("head", "container"),
    [
        (_ftyp(b"isom", b"isom", b"iso2", b"mp41"), "MP4"),
        (_ftyp(b"isom", b"isom", b"mif1"), "MP4"),  # a video brand decides over image brands
        (_ftyp(b"3gp4", b"3gp4"), "MP4"),
        (_ftyp(b"qt  ", b"qt  "), "MOV"),
        (_ftyp(b"M4V ", b"M4V ", b"mp42"), "M4V"),
        (b"\x00\x00\x00\x08wide" + bytes(100), "MOV"),  # QuickTime without ftyp
        (b"\x00\x01\x00\x00mdat" + bytes(100), "MOV"),
        (b"\x00\x00\x01\xb3" + bytes(100), "MPEG"),  # MPEG-1/2 elementary video
        (b"\x47" + bytes(187) + b"\x47" + bytes(100), "TS"),  # 376 not in the head
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "WEBM"),
        (b"\x1a\x45\xdf\xa3", "MKV"),
    ],
)
def test_crafted_heads(head: bytes, container: str) -> None:
    assert sniff_video(head[:512]) == container


# -- frames ----------------------------------------------------------------------------------
@pytest.mark.parametrize("container", CONTAINERS)
def test_every_frame_of_each_container(container: str) -> None:
    reference = oracle(container)
    assert len(reference) == FRAMES
    with VideoReader(io.BytesIO(video(container))) as reader:
        info = reader.info
        frames = list(reader)
    assert (info.width, info.height) == SIZE
    assert info.fps == pytest.approx(FPS)
    assert info.frames in (None, FRAMES)
    if WRITERS[container].frame_counted:
        assert info.frames == FRAMES
    assert [f.index for f in frames] == list(range(FRAMES))
    timestamps = [f.timestamp for f in frames]
    assert timestamps == sorted(timestamps)
    assert timestamps == pytest.approx([i / FPS for i in range(FRAMES)], abs=1e-3)
    for frame in frames:
        assert frame.image.shape == (SIZE[1], SIZE[0], 3) and frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
        np.testing.assert_array_equal(frame.image, reference[frame.index])
    # The frames differ from one another, so the order above is checked.
    assert all(not np.array_equal(a.image, b.image) for a, b in itertools.pairwise(frames))


@pytest.mark.parametrize("stride", [1, 2, 5])
@pytest.mark.parametrize("container", ["mp4", "mkv", "ts", "gif"])  # mkv has B-frames
def test_stride(container: str, stride: int) -> None:
    frames = read(video(container), stride=stride)
    assert [f.index for f in frames] == list(range(0, FRAMES, stride))
    for frame in frames:
        assert frame.timestamp == pytest.approx(frame.index / FPS, abs=1e-3)
        np.testing.assert_array_equal(frame.image, oracle(container)[frame.index])


def test_a_path_is_read_and_a_file_left_open(tmp_path) -> None:
    path = tmp_path / "bus.mkv"
    path.write_bytes(video("mkv"))
    with VideoReader(path) as reader:
        assert len(list(reader)) == FRAMES
    with VideoReader(str(path), stride=4) as reader:
        assert [f.index for f in reader] == [0, 4, 8]
    file = io.BytesIO(video("mkv"))
    file.read(100)  # read from its start whatever the position
    with VideoReader(file) as reader:
        assert len(list(reader)) == FRAMES
    assert not file.closed


def test_rotation_metadata_is_not_applied() -> None:
    frames = read(bus_video("mov", frames=3, size=SIZE, rotation=90))
    assert [f.image.shape for f in frames] == [(SIZE[1], SIZE[0], 3)] * 3


# -- limits ----------------------------------------------------------------------------------
TOO_LONG = "Video too long: more than 5 frames to process at vid_stride 2"


def test_a_stated_frame_count_over_the_limit_is_refused_before_decoding() -> None:
    # 12 frames at stride 2 are 6 to process.
    with pytest.raises(ApiError) as caught:
        VideoReader(io.BytesIO(video("mp4")), stride=2, max_frames=5)
    assert caught.value.status == 400 and caught.value.message.startswith(TOO_LONG)
    assert "send a shorter video or a larger vid_stride" in caught.value.message
    assert len(read(video("mp4"), stride=2, max_frames=6)) == 6


def test_an_unstated_frame_count_over_the_limit_is_refused_at_the_frame_past_it() -> None:
    seen: list[int] = []
    with VideoReader(io.BytesIO(video("mkv")), stride=2, max_frames=5) as reader:
        assert reader.info.frames is None
        with pytest.raises(ApiError) as caught:
            seen.extend(frame.index for frame in reader)
    assert caught.value.status == 400 and caught.value.message.startswith(TOO_LONG)
    assert seen == [0, 2, 4, 6, 8]
    assert len(read(video("mkv"), stride=2, max_frames=6)) == 6


def test_the_stop_event_ends_the_frames_quietly() -> None:
    stop = threading.Event()
    seen = []
    with VideoReader(io.BytesIO(video("mkv")), stop=stop) as reader:
        for frame in reader:
            seen.append(frame.index)
            if len(seen) == 3:
                stop.set()
    assert seen == [0, 1, 2]
    stop = threading.Event()
    stop.set()
    assert read(video("mp4"), stop=stop) == []


def test_a_declared_size_over_the_limit_is_refused_before_decoding() -> None:
    with pytest.raises(ApiError) as caught:
        VideoReader(io.BytesIO(video("mp4")), max_pixels=SIZE[0] * SIZE[1] - 1)
    assert caught.value.status == 400
    assert caught.value.message.startswith("Video frames too large: 160x120")
    assert len(read(video("mp4"), max_pixels=SIZE[0] * SIZE[1])) == FRAMES


def _huge_mpeg2() -> bytes:
    """The MPEG-2 program stream, its sequence header and extension declaring 16383 x 16383."""
    data = bytearray(video("mpg"))
    at = data.index(b"\x00\x00\x01\xb3") + 4
    data[at : at + 3] = b"\xff\xff\xff"  # 12 bits of width, 12 of height: 4095 x 4095
    at = data.index(b"\x00\x00\x01\xb5") + 4  # sequence_extension: 2 more bits of each
    data[at + 1] |= 0x01
    data[at + 2] |= 0xE0
    return bytes(data)


def test_a_header_declaring_a_huge_size_is_refused() -> None:
    with pytest.raises(ApiError) as caught:
        VideoReader(io.BytesIO(_huge_mpeg2()))
    assert caught.value.status == 400
    assert caught.value.message.startswith("Video frames too large: 16383x16383")
    assert caught.value.message.endswith(f"more than {MAX_PIXELS} pixels a frame")


def test_a_gif_declaring_a_huge_screen_is_a_400() -> None:
    data = bytearray(video("gif"))
    data[6:10] = b"\xff\xff\xff\xff"  # the logical screen: 65535 x 65535
    with pytest.raises(ApiError) as caught:
        read(bytes(data))
    assert caught.value.status == 400


def test_a_frame_larger_than_declared_is_refused() -> None:
    # MPEG-TS files concatenate: the second's frames are larger than the size declared first.
    data = video("ts") + bus_video("ts", frames=4, size=(320, 240))
    assert len(read(data)) > FRAMES
    with pytest.raises(ApiError) as caught:
        read(data, max_pixels=SIZE[0] * SIZE[1])
    assert caught.value.message.startswith("Video frames too large: 320x240")


# -- hostile input ---------------------------------------------------------------------------
@pytest.mark.parametrize("container", CONTAINERS)
def test_truncated_files_give_fewer_frames_or_a_400(container: str) -> None:
    data = video(container)
    for fraction in (0.1, 0.5, 0.9):
        frames = frames_or_400(data[: int(len(data) * fraction)], f"{container}@{fraction}")
        if frames is not None:
            assert 0 < len(frames) <= FRAMES
            for frame in frames:  # what decodes before the cut is the file's own frames
                assert frame.image.shape == oracle(container)[frame.index].shape


@pytest.mark.parametrize("container", CONTAINERS)
def test_noise_after_a_valid_magic(container: str) -> None:
    rng = np.random.default_rng(7)
    head = video(container)[:64]
    for size in (0, 100, 10_000, 200_000):
        data = head + rng.integers(0, 256, size, np.uint8).tobytes()
        frames_or_400(data, f"{container}+{size} noise")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", bytes(4096), b"not a video at all", example_image("bus.jpg").read_bytes()],
    ids=["empty", "one-byte", "zeros", "text", "jpeg"],
)
def test_not_a_video_is_a_400(data: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        read(data)
    assert caught.value.status == 400
    assert caught.value.message == "Invalid video: unsupported or corrupt file"


def test_a_zero_length_path_is_a_400(tmp_path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(ApiError) as caught:
        VideoReader(path)
    assert caught.value.status == 400


# Byte flips, truncations, noise and range edits (tests.samples.corruptions) of the two most
# common containers, and fewer of the rest. 3,000 corruptions a container (seeds 11 and 29) gave
# frames or a 400, each within 0.2 s; these keep the run short and catch a regression.
FUZZ_CASES = {"mp4": 200, "mkv": 200}
FUZZ_CASES_OTHERS = 24


@pytest.mark.parametrize("container", CONTAINERS)
def test_corruptions_give_frames_or_a_400(container: str) -> None:
    count = FUZZ_CASES.get(container, FUZZ_CASES_OTHERS)
    for name, data in corruptions(video(container), count, seed=3):
        frames_or_400(data, f"{container} {name}")


def test_close_waits_for_a_decode_running_in_another_thread() -> None:
    # A cancelled request closes its reader from one thread while another decodes: the lock
    # makes the close wait (freeing FFmpeg's state under a decode crashes the process).
    import threading as _threading

    data = bus_video("mkv", frames=120, fps=25, size=(320, 240))
    reader = VideoReader(io.BytesIO(data), stride=60)  # one next_frame decodes 60 frames
    assert reader.next_frame() is not None
    started = _threading.Event()
    result: list[object] = []

    def decode() -> None:
        started.set()
        result.append(reader.next_frame())

    worker = _threading.Thread(target=decode)
    worker.start()
    started.wait()
    reader.close()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(result) == 1
    assert reader.next_frame() is None  # closed: nothing more, and no crash

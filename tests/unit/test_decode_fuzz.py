"""Corrupt files of every accepted format: a valid image or a 400, never anything else.

Each format's small valid file (tests.samples.valid_samples) is truncated, bit-flipped, given
noise after its header, and has ranges zeroed, filled, duplicated or deleted
(tests.samples.corruptions). probe_image (which the ingress calls first) and decode_image must
each either succeed or raise ApiError(400): any other exception would be a 500. The types the
libraries really raise were found by running this with 20,000 corruptions a format; the hundred
here keep the run short and catch a regression.
"""

from __future__ import annotations

import faulthandler
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from shared.errors import ApiError
from shared.images import DecodedImage, ImageProbe, decode_image, probe_image
from tests.samples import corruptions, valid_samples

CASES_PER_FORMAT = 100  # about 3 s for all ten formats here
# A decode that hangs dumps every thread's stack and ends the run, rather than blocking it.
CASE_TIMEOUT_S = 60.0
FORMATS = sorted(valid_samples())
# Pillow warns about the corrupt EXIF and TIFF tags it skips: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@contextmanager
def watchdog(timeout_s: float = CASE_TIMEOUT_S) -> Iterator[None]:
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def outcome(call: Callable[[bytes], Any], data: bytes, case: str) -> Any:
    """What `call` returns, or None for an ApiError(400); anything else fails the test."""
    try:
        with watchdog():
            return call(data)
    except ApiError as exc:
        assert exc.status == 400, f"{case}: {exc.status} {exc.message}"
        assert exc.message.startswith("Invalid image"), f"{case}: {exc.message}"
        return None
    except Exception as exc:  # the test reports every escape, whatever its type
        pytest.fail(f"{case}: {type(exc).__module__}.{type(exc).__name__}: {exc}")


def check(data: bytes, case: str) -> None:
    probe = outcome(probe_image, data, case)
    image = outcome(lambda d: decode_image(d, target_size=640), data, case)
    if image is None:
        return
    assert isinstance(image, DecodedImage)
    array = image.array
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, case
    assert array.size > 0 and min(image.shape) > 0, case
    # Whatever decodes passed the probe first, and within the memory it promised for it.
    assert isinstance(probe, ImageProbe), f"{case}: decoded, but the probe refused it"
    assert probe.peak_bytes >= array.nbytes, case


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_valid_samples_decode(fmt: str) -> None:
    image = decode_image(valid_samples()[fmt])
    assert image.array.shape == (160, 120, 3)
    assert image.format == {"heic": "heif"}.get(fmt, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_corruption_decodes_or_is_a_400(fmt: str) -> None:
    for name, data in corruptions(valid_samples()[fmt], CASES_PER_FORMAT, seed=1):
        check(data, f"{fmt} {name}")


# -- what fuzzing found ----------------------------------------------------------------------
def _avif_without_pixels() -> bytes:
    avif = valid_samples()["avif"]
    payload = avif.index(b"mdat") + 4
    return avif[:payload] + bytes(len(avif) - payload)


def _heic_with_a_long_nal() -> bytes:
    heic = valid_samples()["heic"]
    payload = heic.index(b"mdat") + 4
    (length,) = struct.unpack_from(">I", heic, payload)
    return heic[:payload] + struct.pack(">I", length + 1) + heic[payload + 4 :]


def _dng_without_a_cfa_pattern() -> bytes:
    # A flipped bit in the CFAPattern tag's number: LibRaw then develops the mosaic as one
    # colour ("GMCY", one channel out), which decode_image turns into grey RGB.
    dng = valid_samples()["dng"]
    tag = dng.index(struct.pack("<HHI", 0x828E, 1, 4))  # CFAPattern, 4 BYTEs
    return dng[:tag] + struct.pack("<H", 0xA28E) + dng[tag + 2 :]


@pytest.mark.parametrize(
    ("make", "raised"),
    [
        (lambda: valid_samples()["avif"].replace(b"pitm", b"pitx", 1), "RuntimeError at open"),
        (_avif_without_pixels, "RuntimeError while decoding"),  # the live service's AVIF 500
        (_heic_with_a_long_nal, "EOFError while decoding"),
    ],
    ids=["avif-no-primary-item", "avif-zeroed-payload", "heic-nal-past-the-end"],
)
def test_what_the_libraries_raised_is_a_400(make: Callable[[], bytes], raised: str) -> None:
    data = make()
    with pytest.raises(ApiError) as caught:
        decode_image(data)
    assert caught.value.status == 400
    assert caught.value.__cause__ is not None, raised


def test_a_dng_libraw_develops_as_one_channel_is_grey_rgb() -> None:
    image = decode_image(_dng_without_a_cfa_pattern())
    assert image.array.shape == (160, 120, 3)
    assert (image.array == image.array[..., :1]).all()

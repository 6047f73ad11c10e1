"""Bytes -> upright RGB uint8 array, with the format it came in and the size limits enforced.

Runs in the ingress, which never imports ultralytics. Tests (and anything else) may import both
in one process, and `import ultralytics` replaces `PIL.Image.open` with a wrapper that tries to
pip-install a HEIF plugin on unknown files; so this module always calls Pillow's own `open`.

Pixels match what Ultralytics' own `cv2.imread` gives for the same file wherever both can read
it: EXIF orientation applied, alpha dropped (not composited), 16-bit samples reduced to their
high byte. DNG is developed with LibRaw (`rawpy`), which Pillow and OpenCV cannot do.

Pillow reads every header (format allowlist, pixel limit, orientation) without decoding pixels.
A complete JPEG, the common case, is then decoded by OpenCV's libjpeg-turbo (`decode_image` on
bus.jpg: 4.7 ms against Pillow's 10.3 ms here), with libjpeg's reduced-size decoding for large
photos, and exactly the pixels `cv2.imread` gives Ultralytics.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import ApiError, bad_request

MAX_PIXELS = 64_000_000  # well above a 50 MP phone photo, far below what exhausts memory
# Pillow's plugin IDs for the spec's formats (MPO comes through the JPEG plugin; DNG never reaches
# Pillow). Anything else, e.g. EPS (which would shell out to Ghostscript), is refused unparsed.
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "JPEG2000", "TIFF", "BMP")
DRAFT_KEEP = 1.5  # a reduced-size JPEG decode keeps at least this many times the model's size
# Smaller images decode whole: their full decode costs a few ms, and whole they give exactly
# the pixels (and so the detections) that Ultralytics computes from the same file in-process.
DRAFT_MIN_PIXELS = 4_000_000
_DNG_VERSION_TAG = 50706
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees

# HEIC/HEIF through libheif; AVIF is native in Pillow >= 11.3. Thumbnails and depth maps are
# never used, so they are not parsed.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)


def _pillow_open() -> Any:
    """Pillow's `Image.open`, even when ultralytics has wrapped it (it keeps the original)."""
    opener = Image.open
    if opener.__module__ == "PIL.Image":
        return opener
    return opener.__globals__.get("_image_open", opener)


_OPEN = _pillow_open()


@dataclass(frozen=True)
class DecodedImage:
    array: np.ndarray  # H x W x 3, uint8, RGB, upright
    format: str  # lower-case format name, e.g. "jpeg"
    shape: tuple[int, int]  # (height, width) of the upright original, before any draft scaling

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): multiply array coordinates by these to get original-image pixels."""
        return (self.shape[0] / self.array.shape[0], self.shape[1] / self.array.shape[1])


def _invalid(detail: str = "unsupported or corrupt file") -> ApiError:
    return bad_request(f"Invalid image: {detail}")


def _too_many_pixels(width: int, height: int, max_pixels: int) -> ApiError:
    return _invalid(f"{width}x{height} exceeds the limit of {max_pixels} pixels")


def is_dng(data: bytes) -> bool:
    """A TIFF whose first IFD carries DNGVersion: read from the header, no pixels touched."""
    if data[:4] == b"II*\x00":
        order = "<"
    elif data[:4] == b"MM\x00*":
        order = ">"
    else:
        return False
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for i in range(min(count, 1024)):
            (tag,) = struct.unpack_from(order + "H", data, ifd + 2 + 12 * i)
            if tag == _DNG_VERSION_TAG:
                return True
    except struct.error:
        return False
    return False


def _decode_dng(data: bytes, max_pixels: int) -> DecodedImage:
    import rawpy  # only raw uploads pay for loading LibRaw

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            if sizes.width * sizes.height > max_pixels:
                raise _too_many_pixels(sizes.width, sizes.height, max_pixels)
            # Camera white balance and an sRGB tone curve (dcraw's `-w -g 2.4 12.92`): what the
            # camera's own JPEG aims for, and what the models were trained on. LibRaw applies
            # the file's orientation itself.
            array = raw.postprocess(use_camera_wb=True, output_bps=8, gamma=(2.4, 12.92))
    except (rawpy.LibRawError, rawpy.NotSupportedError, MemoryError, ValueError) as exc:
        raise _invalid("unreadable DNG") from exc
    array = np.ascontiguousarray(array)
    return DecodedImage(array=array, format="dng", shape=(array.shape[0], array.shape[1]))


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _OPEN(io.BytesIO(data), formats=PILLOW_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _invalid("too many pixels (decompression bomb)") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise _invalid() from exc


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> H x W x 3 uint8 RGB, as OpenCV's IMREAD_COLOR would read it."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (and 32-bit integer) grey: keep the high byte, like cv2 does for 16-bit files.
        values = np.asarray(image).astype(np.int64)
        shift = 8 if mode.startswith("I;16") or values.max(initial=0) > 255 else 0
        grey = np.clip(values >> shift, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def draft_factor(width: int, height: int, target_size: int | None, side: str = "long") -> int:
    """1, 2, 4 or 8: how much smaller libjpeg may decode a JPEG for a model of `target_size`.

    The largest reduction that still leaves DRAFT_KEEP times `target_size` pixels on `side`
    ("long" for the letterboxing tasks, "short" for classification, which resizes the shorter
    side): the model's own resize then still shrinks the image, so it sees nearly what it would
    from the full decode. Only images of DRAFT_MIN_PIXELS or more are reduced.
    """
    if target_size is None or width * height < DRAFT_MIN_PIXELS:
        return 1
    reference = max(width, height) if side == "long" else min(width, height)
    for factor in (8, 4, 2):
        if math.ceil(reference / factor) >= DRAFT_KEEP * target_size:  # libjpeg rounds up
            return factor
    return 1


def _draft(image: Image.Image, target_size: int | None, side: str) -> bool:
    """Pillow's route to the same reduced decode (for JPEGs OpenCV does not take)."""
    if image.format not in ("JPEG", "MPO"):
        return False
    width, height = image.size
    factor = draft_factor(width, height, target_size, side)
    if factor == 1:
        return False
    # Pillow picks the largest scale that keeps the requested size, so never a smaller image.
    image.draft(None, (math.ceil(width / factor), math.ceil(height / factor)))
    return image.size != (width, height)


_CV2_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def _is_complete_jpeg(data: bytes) -> bool:
    # OpenCV decodes a truncated JPEG into grey-filled pixels without an error; Pillow raises.
    # Only files that end in an EOI marker (trailing zero padding allowed) take the fast path.
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")  # no copy when nothing is stripped


def _decode_jpeg_cv2(data: bytes, factor: int) -> np.ndarray | None:
    """Upright RGB pixels, EXIF orientation applied by OpenCV; None if it cannot decode."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_REDUCED[factor])
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    target_size: int | None = None,
    target_side: str = "long",
) -> DecodedImage:
    """Decode an upload; raise ApiError(400) for anything that is not a readable image.

    The pixel count is checked from the header, before any pixel is decoded. `target_size`
    (the model's imgsz) lets a large JPEG decode at reduced size, keeping at least that many
    pixels on `target_side` ("long" or "short"); `shape` stays the original's, and
    `DecodedImage.scale` maps coordinates back.
    """
    if not data:
        raise _invalid("the file is empty")
    if is_dng(data):
        return _decode_dng(data, max_pixels)
    image = _open(data)
    try:
        width, height = image.size
        if width * height > max_pixels:
            raise _too_many_pixels(width, height, max_pixels)
        fmt = (image.format or "unknown").lower()
        orientation = image.getexif().get(0x0112, 1)
        swapped = orientation in _SWAPS_AXES
        upright_shape = (width, height) if swapped else (height, width)
        if fmt in ("jpeg", "mpo") and _is_complete_jpeg(data):
            factor = draft_factor(width, height, target_size, target_side)
            fast = _decode_jpeg_cv2(data, factor)
            if fast is not None:
                return DecodedImage(array=fast, format=fmt, shape=upright_shape)
        drafted = _draft(image, target_size, target_side)
        with warnings.catch_warnings():
            # e.g. "Palette images with transparency expressed in bytes": handled, not news.
            warnings.simplefilter("ignore", UserWarning)
            upright = ImageOps.exif_transpose(image)
            array = np.ascontiguousarray(_to_rgb(upright))
    except ApiError:
        raise
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as exc:
        raise _invalid() from exc
    finally:
        image.close()
    shape = upright_shape if drafted else (array.shape[0], array.shape[1])
    return DecodedImage(array=array, format=fmt, shape=shape)

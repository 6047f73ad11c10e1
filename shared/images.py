"""Bytes -> upright RGB uint8 array, with the format it came in and the size limits enforced.

Runs in the ingress, which never imports ultralytics. Tests (and anything else) may import both
in one process, and `import ultralytics` replaces `PIL.Image.open` with a wrapper that tries to
pip-install a HEIF plugin on unknown files; so this module always calls Pillow's own `open`.

Pixels match what Ultralytics' own `cv2.imread` gives for the same file wherever both can read
it: EXIF orientation applied, alpha dropped (not composited), 16-bit samples reduced to their
high byte. DNG is developed with LibRaw (`rawpy`), which Pillow and OpenCV cannot do.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import ApiError, bad_request

MAX_PIXELS = 64_000_000  # well above a 50 MP phone photo, far below what exhausts memory
# Pillow's plugin IDs for the spec's formats (MPO comes through the JPEG plugin; DNG never reaches
# Pillow). Anything else, e.g. EPS (which would shell out to Ghostscript), is refused unparsed.
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "JPEG2000", "TIFF", "BMP")
DRAFT_MIN_RATIO = 2  # draft-decode a JPEG only when it is at least this much larger than needed
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


def _draft(image: Image.Image, target_size: int | None) -> bool:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the model needs far fewer pixels.

    The reduced image still has at least `target_size` pixels on its longer side, so the model
    sees (nearly) what it would after its own resize. Returns whether the size changed.
    """
    if target_size is None or image.format not in ("JPEG", "MPO"):
        return False
    width, height = image.size
    longest = max(width, height)
    if longest < DRAFT_MIN_RATIO * target_size:
        return False
    ratio = target_size / longest
    wanted = (max(1, math.ceil(width * ratio)), max(1, math.ceil(height * ratio)))
    image.draft(None, wanted)
    return image.size != (width, height)


def decode_image(
    data: bytes, *, max_pixels: int = MAX_PIXELS, target_size: int | None = None
) -> DecodedImage:
    """Decode an upload; raise ApiError(400) for anything that is not a readable image.

    The pixel count is checked from the header, before any pixel is decoded. `target_size`
    (the model's imgsz) lets a large JPEG decode at reduced size; `shape` stays the original's,
    and `DecodedImage.scale` maps coordinates back.
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
        drafted = _draft(image, target_size)
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
    if drafted:
        swapped = orientation in _SWAPS_AXES
        shape = (width, height) if swapped else (height, width)
    else:
        shape = (array.shape[0], array.shape[1])
    return DecodedImage(array=array, format=fmt, shape=shape)

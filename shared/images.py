"""Bytes -> upright RGB uint8 array, with the format it came in and the size limits enforced.

Runs in the ingress, which never imports ultralytics, so Pillow's own `Image.open` is used.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.errors import bad_request

MAX_PIXELS = 64_000_000  # well above a 50 MP phone photo, far below what exhausts memory


@dataclass(frozen=True)
class DecodedImage:
    array: np.ndarray  # H x W x 3, uint8, RGB, upright
    format: str  # lower-case format name, e.g. "jpeg"
    shape: tuple[int, int]  # (height, width) of the upright original, before any draft scaling

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): multiply array coordinates by these to get original-image pixels."""
        return (self.shape[0] / self.array.shape[0], self.shape[1] / self.array.shape[1])


def _open(data: bytes) -> Image.Image:
    if not data:
        raise bad_request("Invalid image: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise bad_request("Invalid image: unsupported or corrupt file") from exc


def decode_image(data: bytes, *, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise bad_request(
            f"Invalid image: {width}x{height} exceeds the limit of {max_pixels} pixels"
        )
    fmt = (image.format or "unknown").lower()
    try:
        image = ImageOps.exif_transpose(image)
        rgb = image.convert("RGB")
        array = np.asarray(rgb)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise bad_request("Invalid image: unsupported or corrupt file") from exc
    return DecodedImage(array=array, format=fmt, shape=(array.shape[0], array.shape[1]))

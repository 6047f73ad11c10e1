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

Memory. Every other image is decoded by Pillow and converted to the output in tiles of about
TILE_PIXELS, each written straight into its upright place in the preallocated output, so no
whole-image intermediate (int64, float64, a 3-channel copy of a grey image, a rotated copy)
ever exists. Images of DRAFT_MIN_PIXELS or more that a model of `target_size` will shrink
anyway are reduced by `draft_factor` as they are converted (libjpeg's scaled decode for JPEG,
a box filter per tile for the rest), so the output is small too.

`probe_image` bounds the memory one decode takes from the header alone, for the ingress to
reserve before it decodes. The budget is derived from the 8-bit RGB array the model needs,
3 bytes a pixel at the reduced size, plus what the decoder holds while it works:

    peak_bytes = 17/16 * max(pillow, opencv) + PEAK_SLACK_BYTES
    pillow = 3 * out_pixels                              the RGB uint8 output
           + store * decoded_pixels                      Pillow's image of the file
           + codec * W * H                               the codec's own buffers
           + tile * min(decoded_pixels, TILE_PIXELS)     one tile's temporaries
    opencv = 6 * out_pixels + codec * W * H              (JPEG) its array and the binding's copy

`out_pixels` is ceil(W / f) * ceil(H / f) for the `draft_factor` f; `decoded_pixels` the same
for a JPEG (decoded reduced), W * H for the rest. `store` is Pillow's bytes a pixel for the
mode (1 for L, P and 1; 2 for 16-bit grey; 4 for the rest, RGB included), `codec` the format's
measured extra (CODEC_BYTES_PER_PIXEL; a progressive JPEG's coefficients, a rotated TIFF's
second image), `tile` TILE_BYTES_PER_PIXEL. So an 8-bit RGB PNG decoded whole needs about 7
bytes a pixel (2.3 times W * H * 3), reduced for the model about 4; a 16-bit grey PNG 5 and 2;
a DNG DNG_BYTES_PER_PIXEL bytes a raw pixel.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import cv2
import numpy as np
import pillow_heif
from PIL import Image

from shared.errors import ApiError, bad_request

MAX_PIXELS = 64_000_000  # well above a 50 MP phone photo, far below what exhausts memory
# Pillow's plugin IDs for the spec's formats (MPO comes through the JPEG plugin; DNG never reaches
# Pillow). Anything else, e.g. EPS (which would shell out to Ghostscript), is refused unparsed.
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "JPEG2000", "TIFF", "BMP")
DRAFT_KEEP = 1.5  # a reduced-size JPEG decode keeps at least this many times the model's size
# Smaller images decode whole: their full decode costs a few ms, and whole they give exactly
# the pixels (and so the detections) that Ultralytics computes from the same file in-process.
DRAFT_MIN_PIXELS = 4_000_000
# Big enough that per-tile overhead vanishes (a 64 MP PNG decodes as fast in tiles of 64 K or
# 1 M pixels), small enough that a tile's float64 copy is 2 MB.
TILE_PIXELS = 1 << 18
_DNG_VERSION_TAG = 50706
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image by 90 degrees

# What Pillow and its plugins raise for a corrupt file, found by fuzzing every format with
# 20,000 corruptions each (tests/unit/test_decode_fuzz.py): these become a 400; anything else
# stays a bug, and a 500. While opening, Pillow turns a plugin's SyntaxError, IndexError,
# TypeError and struct.error into UnidentifiedImageError itself.
_OPEN_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # UnidentifiedImageError (any format); short headers; BMP, JPEG 2000, WebP checks
    ValueError,  # JPEG 2000 and TIFF header fields
    RuntimeError,  # Pillow's AVIF plugin (libavif): "Missing or empty image item"
)
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # truncated or broken data, every Pillow codec (libjpeg, zlib, libtiff, libwebp...)
    ValueError,  # pillow-heif ("Invalid input"), a BMP's palette ("invalid palette size")
    SyntaxError,  # PNG chunks after IDAT, AVIF, a HEIC's EXIF (read by Pillow's TIFF parser)
    EOFError,  # pillow-heif (libheif): "Unexpected end of file"
    RuntimeError,  # Pillow's AVIF plugin: "Decoding of color planes failed"
    Image.DecompressionBombError,  # Pillow re-checks a TIFF's size as it loads it
)

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


def draft_factor(width: int, height: int, target_size: int | None, side: str = "long") -> int:
    """1, 2, 4 or 8: how much smaller an image may be decoded for a model of `target_size`.

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


def _reduced(size: int, factor: int) -> int:
    return math.ceil(size / factor)  # as libjpeg's scaled decode rounds: no pixel dropped


def _box_reduce(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Each factor x factor block averaged to one pixel; the partial blocks at the far edges
    average what they hold, as Pillow's `Image.reduce` does."""
    if factor == 1:
        return pixels
    rows, cols = pixels.shape[:2]
    shape = (_reduced(rows, factor), _reduced(cols, factor), *pixels.shape[2:])
    reduced = np.empty(shape, np.uint8)
    # Whole blocks, then the partial ones: each part an integer scale, which INTER_AREA
    # averages exactly; one resize of all would spread the remainder over every pixel.
    for top, bottom in _block_spans(rows, factor):
        for left, right in _block_spans(cols, factor):
            size = (_reduced(right - left, factor), _reduced(bottom - top, factor))
            part = cv2.resize(pixels[top:bottom, left:right], size, interpolation=cv2.INTER_AREA)
            y, x = top // factor, left // factor
            target = reduced[y : y + size[1], x : x + size[0]]
            target[...] = part.reshape(target.shape)  # OpenCV drops a single channel's axis
    return reduced


def _block_spans(size: int, factor: int) -> list[tuple[int, int]]:
    whole = size // factor * factor
    return [span for span in ((0, whole), (whole, size)) if span[1] > span[0]]


# -- memory estimate ------------------------------------------------------------------------
# Extra bytes per pixel that each codec holds while Pillow loads an image, beyond Pillow's own
# image: measured at 6.75 MP (tests/unit/test_decode_memory.py checks the sum), rounded up.
CODEC_BYTES_PER_PIXEL = {
    "JPEG": 0,  # libjpeg decodes row by row (a progressive file: see _codec_bytes)
    "MPO": 0,
    "PNG": 0,  # row by row
    "BMP": 0,
    "TIFF": 0,  # strip by strip (a rotated one: see _codec_bytes)
    "WEBP": 12,  # libwebp's frame buffer and the bytes Pillow copies it through (measured 8.2)
    "AVIF": 8,  # libavif's YUV planes and RGB buffer (measured 2.3 for 8-bit 4:2:0)
    "HEIF": 8,  # libheif, likewise (measured 0.3; 16-bit planes for 10-bit files)
    "JPEG2000": 20,  # OpenJPEG holds every component as int32 (measured 12 for RGB)
}
# One tile's temporaries per tile pixel: its crop, the bytes numpy reads it through (twice, as
# Pillow joins them), and the converted pixels; a float64 copy for the 32-bit modes.
TILE_BYTES_PER_PIXEL = {"I": 32, "F": 32}
TILE_BYTES_DEFAULT = 16
# Allocator rounding, codec state, small Python objects: a fixed amount and a 1/16 margin.
PEAK_SLACK_BYTES = 4 << 20
PEAK_MARGIN_SHIFT = 4
# LibRaw: the 16-bit raw mosaic, its 4 x 16-bit working image, the 8-bit output and the copy
# rawpy returns (measured 12.8 per pixel for a Bayer DNG).
DNG_BYTES_PER_PIXEL = 20
_STORE_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


@dataclass(frozen=True)
class ImageProbe:
    """What the header says, and the most memory `decode_image` will take for this file."""

    format: str  # lower-case, as DecodedImage.format
    width: int  # the size the header declares (EXIF orientation not considered)
    height: int
    mode: str  # Pillow's mode ("RGB", "I;16", ...); "raw" for DNG
    peak_bytes: int


def _store_bytes(image: Image.Image) -> int:
    return _STORE_BYTES_PER_PIXEL.get(image.mode, 4)


def _codec_bytes(image: Image.Image) -> int:
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        # A progressive JPEG keeps every DCT coefficient (16 bits) of the full-size image.
        return 2 * len(image.getbands())
    if image.format == "TIFF" and image.tag_v2.get(_ORIENTATION_TAG, 1) != 1:
        return _store_bytes(image)  # Pillow turns it upright while loading, into a new image
    return CODEC_BYTES_PER_PIXEL.get(image.format or "", max(CODEC_BYTES_PER_PIXEL.values()))


def _pillow_peak(image: Image.Image, target_size: int | None, target_side: str) -> int:
    width, height = image.size
    factor = draft_factor(width, height, target_size, target_side)
    out_pixels = _reduced(width, factor) * _reduced(height, factor)
    # A drafted JPEG is decoded at the reduced size; everything else at full size.
    drafts = image.format in ("JPEG", "MPO") and _jpeg_drafts(width, height, factor)
    decoded = out_pixels if drafts else width * height
    store = _store_bytes(image)
    full_codec = _codec_bytes(image) * width * height  # progressive JPEG: never reduced
    tile = TILE_BYTES_PER_PIXEL.get(image.mode, TILE_BYTES_DEFAULT) * min(decoded, TILE_PIXELS)
    pillow = 3 * out_pixels + store * decoded + full_codec + tile
    # OpenCV's JPEG path: the array it decodes (or turns upright) and the copy its Python
    # binding returns of it.
    opencv = 6 * out_pixels + full_codec
    return _with_slack(max(pillow, opencv))


def _with_slack(peak: int) -> int:
    return peak + (peak >> PEAK_MARGIN_SHIFT) + PEAK_SLACK_BYTES


def _dng_probe(data: bytes, max_pixels: int) -> ImageProbe:
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:  # parses the header; unpacks nothing yet
            sizes = raw.sizes
    except _dng_errors() as exc:
        raise _invalid("unreadable DNG") from exc
    if sizes.width * sizes.height > max_pixels:
        raise _too_many_pixels(sizes.width, sizes.height, max_pixels)
    raw_pixels = max(sizes.raw_width * sizes.raw_height, sizes.width * sizes.height)
    peak = _with_slack(DNG_BYTES_PER_PIXEL * raw_pixels)
    return ImageProbe("dng", sizes.width, sizes.height, "raw", peak)


def probe_image(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    target_size: int | None = None,
    target_side: str = "long",
) -> ImageProbe:
    """Header-only: format, size, mode and an upper bound of `decode_image`'s peak memory.

    Raises the ApiError(400) that `decode_image` would for an unreadable header or too many
    pixels; a file that passes may still fail to decode.
    """
    if not data:
        raise _invalid("the file is empty")
    if is_dng(data):
        return _dng_probe(data, max_pixels)
    image = _open(data)
    try:
        width, height = _checked_size(image, max_pixels)
        peak = _pillow_peak(image, target_size, target_side)
        return ImageProbe((image.format or "unknown").lower(), width, height, image.mode, peak)
    finally:
        image.close()


def decode_peak_bytes(
    data: bytes, target_size: int | None = None, target_side: str = "long"
) -> int:
    """Bytes to reserve before `decode_image(data, target_size=..., target_side=...)`."""
    return probe_image(data, target_size=target_size, target_side=target_side).peak_bytes


# -- DNG ------------------------------------------------------------------------------------
@cache
def _dng_errors() -> tuple[type[BaseException], ...]:
    import rawpy  # only raw uploads pay for loading LibRaw

    return (rawpy.LibRawError, rawpy.NotSupportedError, MemoryError, ValueError)


def _decode_dng(
    data: bytes, max_pixels: int, target_size: int | None, target_side: str
) -> DecodedImage:
    import rawpy

    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            if sizes.width * sizes.height > max_pixels:
                raise _too_many_pixels(sizes.width, sizes.height, max_pixels)
            # Camera white balance and an sRGB tone curve (dcraw's `-w -g 2.4 12.92`): what the
            # camera's own JPEG aims for, and what the models were trained on. LibRaw applies
            # the file's orientation itself.
            array = raw.postprocess(use_camera_wb=True, output_bps=8, gamma=(2.4, 12.92))
    except _dng_errors() as exc:
        raise _invalid("unreadable DNG") from exc
    if array.ndim != 3 or array.shape[2] not in (1, 3) or array.size == 0:
        raise _invalid("unreadable DNG")
    shape = (array.shape[0], array.shape[1])
    factor = draft_factor(shape[1], shape[0], target_size, target_side)
    pixels = _box_reduce(array, factor)
    if array.shape[2] == 1:  # a monochrome sensor (or a CFA LibRaw reads as one): grey
        return DecodedImage(array=_grey_to_rgb(pixels), format="dng", shape=shape)
    return DecodedImage(array=np.ascontiguousarray(pixels), format="dng", shape=shape)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    rows, cols = grey.shape[:2]
    rgb = np.empty((rows, cols, 3), np.uint8)
    rgb[...] = grey.reshape(rows, cols, 1)
    return rgb


# -- Pillow ---------------------------------------------------------------------------------
def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _OPEN(io.BytesIO(data), formats=PILLOW_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _invalid("too many pixels (decompression bomb)") from exc
    except _OPEN_ERRORS as exc:
        raise _invalid() from exc


def _checked_size(image: Image.Image, max_pixels: int) -> tuple[int, int]:
    width, height = image.size
    if width * height > max_pixels:
        raise _too_many_pixels(width, height, max_pixels)
    if width < 1 or height < 1:
        raise _invalid()
    return width, height


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, read as ImageOps.exif_transpose reads it."""
    value = image.getexif().get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


# For each EXIF orientation, a view of the upright output in the stored image's layout: the
# stored pixels written into it leave the output as ImageOps.exif_transpose turns them.
_STORED_VIEWS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda upright: upright,
    2: lambda upright: upright[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda upright: upright[::-1, ::-1],  # ROTATE_180
    4: lambda upright: upright[::-1],  # FLIP_TOP_BOTTOM
    5: lambda upright: upright.swapaxes(0, 1),  # TRANSPOSE
    6: lambda upright: np.rot90(upright, 1),  # undoes ROTATE_270
    7: lambda upright: upright[::-1, ::-1].swapaxes(0, 1),  # TRANSVERSE
    8: lambda upright: np.rot90(upright, -1),  # undoes ROTATE_90
}

Converter = Callable[[Image.Image], np.ndarray]  # one tile -> uint8, H x W (grey) or H x W x 3


def _tiles(width: int, height: int, factor: int) -> Iterator[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes of about TILE_PIXELS, each a whole number of
    factor x factor blocks (but at the far edges), so no block straddles two tiles."""
    if width * factor <= TILE_PIXELS:
        cols, rows = width, TILE_PIXELS // width // factor * factor
    else:  # rows wider than a tile: split them too
        cols, rows = TILE_PIXELS // factor // factor * factor, factor
    for top in range(0, height, rows):
        for left in range(0, width, cols):
            yield left, top, min(left + cols, width), min(top + rows, height)


def _tile_max(image: Image.Image, read: Converter) -> Any:
    return max(read(image.crop(box)).max(initial=0) for box in _tiles(*image.size, 1))


def _finite(tile: Image.Image) -> np.ndarray:
    return np.nan_to_num(np.asarray(tile))


def _grey(tile: Image.Image) -> np.ndarray:
    return np.asarray(tile.convert("L"))  # "1" and "LA": what convert("RGB") puts in each band


def _rgb(tile: Image.Image) -> np.ndarray:
    return np.asarray(tile.convert("RGB"))


def _high_byte(tile: Image.Image) -> np.ndarray:
    return (np.asarray(tile) >> 8).astype(np.uint8)  # what cv2 keeps of a 16-bit sample


def _int_grey(tile: Image.Image, shift: int) -> np.ndarray:
    return np.clip(np.asarray(tile) >> shift, 0, 255).astype(np.uint8)


def _float_grey(tile: Image.Image, scale: bool) -> np.ndarray:
    # float64, as the whole-image conversion did: float32 could round a x.5 the other way.
    values = np.asarray(tile).astype(np.float64)
    np.nan_to_num(values, copy=False)
    if scale:
        values *= 255.0
    np.round(values, out=values)
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)


def _converter(image: Image.Image) -> Converter:
    """Any Pillow mode's tiles -> uint8 grey or RGB, as OpenCV's IMREAD_COLOR would read it."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return np.asarray
    if mode in ("1", "LA"):
        return _grey
    if mode.startswith("I;16"):
        return _high_byte
    if mode == "I":
        # 32-bit integer grey: the high byte of 16 bits when the values need more than 8.
        return partial(_int_grey, shift=8 if _tile_max(image, np.asarray) > 255 else 0)
    if mode == "F":
        # Values of at most 1 are taken as 0..1 and scaled; larger ones as 0..255.
        return partial(_float_grey, scale=bool(_tile_max(image, _finite) <= 1.0))
    return _rgb


def _pillow_pixels(image: Image.Image, factor: int, orientation: int) -> np.ndarray:
    """The loaded image, reduced by `factor` and turned upright, as H x W x 3 uint8 RGB."""
    width, height = image.size
    convert = _converter(image)
    rows, cols = _reduced(height, factor), _reduced(width, factor)
    shape = (cols, rows) if orientation in _SWAPS_AXES else (rows, cols)
    upright = np.empty((*shape, 3), np.uint8)
    stored = _STORED_VIEWS[orientation](upright)
    for left, top, right, bottom in _tiles(width, height, factor):
        pixels = _box_reduce(convert(image.crop((left, top, right, bottom))), factor)
        y, x = top // factor, left // factor
        target = stored[y : y + pixels.shape[0], x : x + pixels.shape[1]]
        target[...] = pixels[..., None] if pixels.ndim == 2 else pixels  # grey: into all 3
    return upright


def _draft_request(width: int, height: int, factor: int) -> tuple[int, int]:
    # Pillow scales by the largest power of 2 up to min(width // w, height // h) for a request
    # of (w, h): the floor makes that exactly `factor` (a ceil could make it factor / 2).
    return max(1, width // factor), max(1, height // factor)


def _jpeg_drafts(width: int, height: int, factor: int) -> bool:
    w, h = _draft_request(width, height, factor)
    return factor > 1 and min(width // w, height // h) >= factor


def _draft(image: Image.Image, target_size: int | None, side: str) -> bool:
    """Pillow's route to the same reduced decode (for JPEGs OpenCV does not take)."""
    if image.format not in ("JPEG", "MPO"):
        return False
    width, height = image.size
    factor = draft_factor(width, height, target_size, side)
    if factor == 1:
        return False
    image.draft(None, _draft_request(width, height, factor))
    return image.size != (width, height)


# RGB straight from libjpeg-turbo (the same pixels as BGR then cvtColor, without a second full
# array: cvtColor copies its source even when told to write in place). The scale bits of the
# REDUCED flags combine with IMREAD_COLOR_RGB, not with the BGR bit of IMREAD_REDUCED_COLOR_N.
_CV2_REDUCED = {
    1: cv2.IMREAD_COLOR_RGB,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_COLOR_RGB,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_COLOR_RGB,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_COLOR_RGB,
}
_EOI_SEARCH = 1 << 16  # trailing zero padding looked past; a file with more goes through Pillow


def _is_complete_jpeg(data: bytes) -> bool:
    # OpenCV decodes a truncated JPEG into grey-filled pixels without an error; Pillow raises.
    # Only files that end in an EOI marker (trailing zero padding allowed) take the fast path.
    # Only the tail is stripped: rstrip on the whole file would copy it.
    return data[-_EOI_SEARCH:].rstrip(b"\x00").endswith(b"\xff\xd9")


def _decode_jpeg_cv2(data: bytes, factor: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Upright RGB pixels, EXIF orientation applied by OpenCV; None if it cannot decode.

    `shape` is the upright size Pillow read from the header, reduced by `factor`: OpenCV reads
    the header itself, and a file on which the two disagree (its orientation, its size) goes
    the Pillow way, where the pixel limit and the orientation are the ones checked.
    """
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_REDUCED[factor])
    if rgb is None or rgb.shape != (*shape, 3):
        return None
    return rgb


def _decode_pillow(
    image: Image.Image,
    data: bytes,
    max_pixels: int,
    target_size: int | None,
    target_side: str,
) -> DecodedImage:
    width, height = _checked_size(image, max_pixels)
    fmt = (image.format or "unknown").lower()
    if fmt in ("jpeg", "mpo") and _is_complete_jpeg(data):
        orientation = _orientation(image)
        upright = (width, height) if orientation in _SWAPS_AXES else (height, width)
        factor = draft_factor(width, height, target_size, target_side)
        reduced = (_reduced(upright[0], factor), _reduced(upright[1], factor))
        fast = _decode_jpeg_cv2(data, factor, reduced)
        if fast is not None:
            return DecodedImage(array=fast, format=fmt, shape=upright)
    drafted = _draft(image, target_size, target_side)
    with warnings.catch_warnings():
        # e.g. "Palette images with transparency expressed in bytes": handled, not news.
        warnings.simplefilter("ignore", UserWarning)
        image.load()
        # Read after loading, as exif_transpose does: a TIFF is turned by Pillow while loading.
        orientation = _orientation(image)
        factor = 1 if drafted else draft_factor(width, height, target_size, target_side)
        array = _pillow_pixels(image, factor, orientation)
    if not drafted and factor == 1:
        return DecodedImage(array=array, format=fmt, shape=(array.shape[0], array.shape[1]))
    # `width, height` are the header's, before any draft: a TIFF's already upright.
    upright = (width, height) if orientation in _SWAPS_AXES else (height, width)
    return DecodedImage(array=array, format=fmt, shape=upright)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    target_size: int | None = None,
    target_side: str = "long",
) -> DecodedImage:
    """Decode an upload; raise ApiError(400) for anything that is not a readable image.

    The pixel count is checked from the header, before any pixel is decoded. `target_size`
    (the model's imgsz) lets a large image decode at reduced size, keeping at least that many
    pixels on `target_side` ("long" or "short"); `shape` stays the original's, and
    `DecodedImage.scale` maps coordinates back. `probe_image` bounds the memory this takes.
    """
    if not data:
        raise _invalid("the file is empty")
    if is_dng(data):
        return _decode_dng(data, max_pixels, target_size, target_side)
    image = _open(data)
    try:
        return _decode_pillow(image, data, max_pixels, target_size, target_side)
    except ApiError:
        raise
    except _DECODE_ERRORS as exc:
        raise _invalid() from exc
    finally:
        image.close()

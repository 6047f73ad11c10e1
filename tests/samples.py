"""Test images: `bus.jpg` converted to every format and pixel layout the API accepts.

Each variant is made with the same libraries a user's tools would use (Pillow, pillow-heif, and
PiDNG for a camera-like Bayer DNG), from the pixels Pillow decodes from the JPEG, so a lossless
variant must give exactly the JPEG's detections.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pillow_heif
from PIL import Image

from shared.assets import example_image
from shared.results import Prediction

pillow_heif.register_heif_opener()

ORIENTATION = 0x0112


@dataclass(frozen=True)
class Variant:
    name: str
    make: Callable[[], bytes]
    lossless: bool  # decodes to exactly the JPEG's pixels (after orientation)
    format: str  # what the service reports decoding
    box_tol: float = 8.0  # px on the 810 x 1080 bus, for lossy variants


@cache
def bus_jpeg() -> bytes:
    return example_image("bus.jpg").read_bytes()


@cache
def bus_rgb() -> Image.Image:
    with Image.open(io.BytesIO(bus_jpeg())) as image:
        return image.convert("RGB")


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def rotated_with_exif(fmt: str, orientation: int = 6, **kwargs) -> bytes:
    """Pixels stored sideways plus the EXIF tag that turns them upright again."""
    # ImageOps.exif_transpose undoes orientation 6 with ROTATE_270, so store ROTATE_90.
    stored = bus_rgb().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(stored, fmt, exif=exif.tobytes(), **kwargs)


def sixteen_bit_png(grey: bool) -> bytes:
    """16-bit samples v * 257, whose high byte is the original 8-bit value v."""
    import cv2

    pixels = np.asarray(bus_rgb().convert("L") if grey else bus_rgb()).astype(np.uint16) * 257
    ok, encoded = cv2.imencode(".png", pixels if grey else pixels[..., ::-1])
    assert ok
    return encoded.tobytes()


def mpo() -> bytes:
    """A two-frame MPO (a stereo pair's layout) whose first frame is the bus."""
    second = bus_rgb().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return encode(bus_rgb(), "MPO", save_all=True, append_images=[second], quality=95)


def rgba_png() -> bytes:
    """Half-transparent alpha: the service, like Ultralytics, reads the colour under it."""
    rgba = bus_rgb().convert("RGBA")
    rgba.putalpha(128)
    return encode(rgba, "PNG")


def bayer_dng(orientation: int = 1) -> bytes:
    """A raw RGGB Bayer DNG, as a camera writes it, from the bus pixels (written with PiDNG)."""
    return bayer_dng_from(bus_rgb(), orientation)


def _cmyk_tiff() -> bytes:
    # Pillow's RGB<->CMYK is exact with K = 0, so this is lossless.
    return encode(bus_rgb().convert("CMYK"), "TIFF")


VARIANTS: list[Variant] = [
    Variant("png", lambda: encode(bus_rgb(), "PNG"), True, "png"),
    Variant("bmp", lambda: encode(bus_rgb(), "BMP"), True, "bmp"),
    Variant("tiff", lambda: encode(bus_rgb(), "TIFF", compression="tiff_lzw"), True, "tiff"),
    Variant("webp-lossless", lambda: encode(bus_rgb(), "WEBP", lossless=True), True, "webp"),
    Variant("jp2-lossless", lambda: encode(bus_rgb(), "JPEG2000"), True, "jpeg2000"),
    Variant("png-exif-rotated", lambda: rotated_with_exif("PNG"), True, "png"),
    Variant("tiff-exif-rotated", lambda: rotated_with_exif("TIFF"), True, "tiff"),
    Variant("rgba-png", rgba_png, True, "png"),
    Variant("cmyk-tiff", _cmyk_tiff, True, "tiff"),
    Variant("png-16bit", lambda: sixteen_bit_png(grey=False), True, "png"),
    Variant("webp", lambda: encode(bus_rgb(), "WEBP", quality=90), False, "webp"),
    Variant("avif", lambda: encode(bus_rgb(), "AVIF", quality=90), False, "avif"),
    Variant("heic", lambda: encode(bus_rgb(), "HEIF", quality=90), False, "heif"),
    Variant(
        "jp2-lossy", lambda: encode(bus_rgb(), "JPEG2000", quality_layers=[4]), False, "jpeg2000"
    ),
    Variant("mpo", mpo, False, "mpo"),
    Variant("jpeg-exif-rotated", lambda: rotated_with_exif("JPEG", quality=95), False, "jpeg"),
    Variant("heic-exif-rotated", lambda: rotated_with_exif("HEIF", quality=90), False, "heif"),
    Variant(
        "cmyk-jpeg", lambda: encode(bus_rgb().convert("CMYK"), "JPEG", quality=95), False, "jpeg"
    ),
    # Mosaicking to one colour per pixel and demosaicking back blurs edges: an arm moves ~13 px.
    Variant("dng", bayer_dng, False, "dng", box_tol=16.0),
]

# Modes whose pixels change (grey, palette): the reference is Ultralytics reading the same file.
MODE_VARIANTS: dict[str, Callable[[], bytes]] = {
    "grey-png": lambda: encode(bus_rgb().convert("L"), "PNG"),
    "grey-jpeg": lambda: encode(bus_rgb().convert("L"), "JPEG", quality=95),
    "palette-png": lambda: encode(bus_rgb().quantize(256), "PNG"),
    "palette-gif-like-bmp": lambda: encode(bus_rgb().quantize(64), "BMP"),
    "grey-16bit-png": lambda: sixteen_bit_png(grey=True),
    "bilevel-tiff": lambda: encode(bus_rgb().convert("1"), "TIFF"),
}


def _rotated_rect(cx: float, cy: float, w: float, h: float, degrees: float) -> list[tuple]:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    corners = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def aerial_boats(size: int = 640, seed: int = 0) -> bytes:
    """A synthetic top-down view of moored boats at odd angles, as PNG.

    No package ships an aerial photo; the DOTA OBB model reads these piers as rotated
    `harbor`s with confidences around 0.5-0.8, which is what an OBB test needs.
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    water = np.clip(np.array([40, 70, 100]) + rng.normal(0, 6, (size, size, 3)), 0, 255)
    image = Image.fromarray(water.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        cx, cy = rng.integers(60, size - 60, 2)
        angle = float(rng.integers(0, 180))
        draw.polygon(_rotated_rect(cx, cy, 70, 16, angle), fill=(235, 235, 235))
        draw.polygon(_rotated_rect(cx, cy, 30, 10, angle), fill=(120, 60, 40))
    return encode(image, "PNG")


def character(text: str, size: int = 96) -> bytes:
    """One character in Pillow's default font, black on white, as PNG (for `chars-cls`)."""
    from PIL import ImageDraw, ImageFont

    image = Image.new("RGB", (size, size), "white")
    font = ImageFont.load_default(size=size * 2 // 3)
    ImageDraw.Draw(image).text((size / 2, size / 2), text, fill="black", font=font, anchor="mm")
    return encode(image, "PNG")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A valid greyscale PNG of zeros: kilobytes on disk, `width * height` samples decoded."""
    compressor = zlib.compressobj(9)
    row = bytes(width * bit_depth // 8 + 1)  # the filter byte, then the zero samples
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def jpeg_with_size(width: int, height: int) -> bytes:
    """bus.jpg with its frame header claiming another size."""
    data = bytearray(bus_jpeg())
    sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# -- big files for the decoder's memory budget ----------------------------------------------
def big_sixteen_bit_png(width: int = 8000, height: int = 8000) -> bytes:
    """A 16-bit greyscale PNG of zeros: 124 KB on disk at 8000 x 8000, 128 MB decoded."""
    return png_bomb(width, height, bit_depth=16)


def big_float_tiff(width: int = 7000, height: int = 7000) -> bytes:
    """A 32-bit float ('F') TIFF of 0..1 steps, deflated: under 1 MB, 196 MB decoded at 7000^2.

    Values of at most 1 take the decoder's 0..1 scaling; runs of 500 equal values compress.
    """
    rows = np.arange(height, dtype=np.float32)[:, None] // 500
    cols = np.arange(width, dtype=np.float32)[None, :] // 500
    steps = (height - 1) // 500 + (width - 1) // 500 or 1
    values = ((rows + cols) / steps).astype(np.float32)
    return encode(Image.fromarray(values, "F"), "TIFF", compression="tiff_deflate")


def big_rgb_png(width: int = 6000, height: int = 6000) -> bytes:
    """An 8-bit RGB PNG of gradients: 0.5 MB on disk at 6000 x 6000, 108 MB as RGB."""
    x = np.arange(width, dtype=np.uint32)[None, :] % 256
    y = np.arange(height, dtype=np.uint32)[:, None] % 256
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = x, y, (x + y) // 2
    return encode(Image.fromarray(rgb), "PNG", compress_level=1)


def bayer_dng_from(image: Image.Image, orientation: int = 1) -> bytes:
    """A raw RGGB Bayer DNG of any RGB image, as a camera writes it (written with PiDNG)."""
    from pidng.core import RAW2DNG
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation
    from pidng.dng import DNGTags, Tag

    srgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    height, width, _ = linear.shape
    mosaic = np.empty((height, width))
    mosaic[0::2, 0::2] = linear[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = linear[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = linear[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = linear[1::2, 1::2, 2]
    # Camera space = linear sRGB: ColorMatrix1 is XYZ(D65) -> linear sRGB.
    xyz_to_srgb = [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, width),
        (Tag.ImageLength, height),
        (Tag.TileWidth, width),
        (Tag.TileLength, height),
        (Tag.Orientation, orientation),
        (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (Tag.SamplesPerPixel, 1),
        (Tag.BitsPerSample, 16),
        (Tag.CFARepeatPatternDim, [2, 2]),
        (Tag.CFAPattern, CFAPattern.RGGB),
        (Tag.BlackLevel, 0),
        (Tag.WhiteLevel, 65535),
        (Tag.ColorMatrix1, [[round(v * 10000), 10000] for row in xyz_to_srgb for v in row]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (Tag.BaselineExposure, [[0, 1]]),
        (Tag.Make, "YOLO Endpoints"),
        (Tag.Model, "Synthetic Bayer"),
        (Tag.UniqueCameraModel, "YOLO Endpoints Synthetic Bayer"),
        (Tag.DNGVersion, DNGVersion.V1_4),
        (Tag.DNGBackwardVersion, DNGVersion.V1_0),
    ):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    return bytes(writer.convert(np.round(mosaic * 65535).astype(np.uint16)))


# -- corrupt files, every format ------------------------------------------------------------
@cache
def small_bus() -> Image.Image:
    """bus.jpg at 120 x 160: small enough to decode hundreds of corruptions in seconds."""
    return bus_rgb().resize((120, 160), Image.Resampling.LANCZOS)


@cache
def _valid_samples() -> tuple[tuple[str, bytes], ...]:
    small = small_bus()
    second = small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return (
        ("jpeg", encode(small, "JPEG", quality=90)),
        ("png", encode(small, "PNG")),
        ("webp", encode(small, "WEBP", quality=80)),
        ("avif", encode(small, "AVIF", quality=60)),
        ("heic", encode(small, "HEIF", quality=60)),
        ("jpeg2000", encode(small, "JPEG2000")),
        ("tiff", encode(small, "TIFF", compression="tiff_lzw")),
        ("bmp", encode(small, "BMP")),
        ("dng", bayer_dng_from(small)),
        ("mpo", encode(small, "MPO", save_all=True, append_images=[second], quality=90)),
    )


def valid_samples() -> dict[str, bytes]:
    """One small valid file per accepted format (format name -> bytes)."""
    return dict(_valid_samples())


def _truncated(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    # Half inside the first 64 bytes, where the headers are; half anywhere.
    limit = min(64, len(data) - 1) if rng.random() < 0.5 else len(data) - 1
    end = int(rng.integers(1, max(limit, 1) + 1))
    return f"truncate@{end}", data[:end]


def _bit_flips(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    corrupt = bytearray(data)
    offsets = sorted(int(o) for o in rng.integers(16, len(data), int(rng.integers(1, 9))))
    for offset in offsets:
        corrupt[offset] ^= 1 << int(rng.integers(0, 8))
    return f"flip@{','.join(map(str, offsets))}", bytes(corrupt)


def _header_then_noise(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    keep = int(rng.choice([16, 32, 64, 128, 256, max(16, len(data) // 8), len(data) // 2]))
    noise = rng.integers(0, 256, len(data) - min(keep, len(data)), dtype=np.uint8).tobytes()
    return f"header{keep}+noise", data[:keep] + noise


def _range_edit(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    start = int(rng.integers(0, len(data)))
    end = min(len(data), start + int(rng.integers(1, max(2, len(data) // 4))))
    kind = str(rng.choice(["zero", "ff", "duplicate", "delete"]))
    filler = {
        "zero": bytes(end - start),
        "ff": b"\xff" * (end - start),
        "duplicate": data[start:end] * 2,
        "delete": b"",
    }[kind]
    return f"{kind}[{start}:{end}]", data[:start] + filler + data[end:]


_CORRUPTIONS = (_truncated, _bit_flips, _header_then_noise, _range_edit)


def corruptions(data: bytes, count: int = 30, seed: int = 0) -> list[tuple[str, bytes]]:
    """`count` corrupt variants of `data`, as (name, bytes), the same for the same seed.

    Truncations (inside the header and anywhere), bit flips past the first 16 bytes, a valid
    header followed by noise, and zeroed, 0xFF-filled, duplicated or deleted ranges, in turn.
    """
    rng = np.random.default_rng(seed)
    return [_CORRUPTIONS[i % len(_CORRUPTIONS)](data, rng) for i in range(count)]


# -- model output, for the tests of what the ingress makes of it -------------------------------
SAMPLE_NAMES = ["person", "bus", "car"]
SAMPLE_SPEED = {"preprocess": 1.234, "inference": 10.0, "postprocess": 0.5}


def sample_detections(task: str = "detect", **extra: Any) -> Prediction:
    """Two detections (a bus, a person) as the model deployment returns them; `extra` adds the
    task's own arrays (segments, keypoints, obb)."""
    return Prediction(
        task=task,
        names=SAMPLE_NAMES,
        boxes=np.array([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 5.5, 7.25]], np.float32),
        confidence=np.array([0.912345678, 0.3], np.float32),
        classes=np.array([1, 0]),
        speed=SAMPLE_SPEED,
        **extra,
    )

"""Decoding: every format and pixel layout to the pixels Ultralytics would see; bombs refused."""

from __future__ import annotations

import io
import timeit
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from shared import images
from shared.errors import ApiError
from shared.images import (
    MAX_PIXELS,
    decode_image,
    decode_peak_bytes,
    draft_factor,
    is_dng,
    probe_image,
)
from tests.samples import (
    MODE_VARIANTS,
    VARIANTS,
    Variant,
    bayer_dng,
    bayer_dng_from,
    bus_jpeg,
    bus_rgb,
    encode,
    jpeg_with_size,
    png_bomb,
)

# Mean absolute difference per channel value that a lossy re-encode of bus.jpg stays within.
LOSSY_MEAN_DIFF = 4.0


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return decode_image(bus_jpeg()).array


def test_jpeg_decodes_to_upright_rgb(reference: np.ndarray) -> None:
    image = decode_image(bus_jpeg())
    assert image.format == "jpeg"
    assert image.shape == (1080, 810)
    assert image.array.shape == (1080, 810, 3)
    assert image.array.dtype == np.uint8
    assert image.scale == (1.0, 1.0)
    assert np.array_equal(image.array, np.asarray(bus_rgb()))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_every_format_decodes_to_the_jpeg_s_pixels(variant: Variant, reference) -> None:
    image = decode_image(variant.make())
    assert image.format == variant.format
    assert image.shape == (1080, 810), "EXIF orientation applied: the upright shape"
    assert image.array.shape == (1080, 810, 3)
    diff = np.abs(image.array.astype(np.int16) - reference).mean()
    if variant.lossless:
        assert diff == 0
    else:
        assert diff < LOSSY_MEAN_DIFF


@pytest.mark.parametrize("name", sorted(MODE_VARIANTS))
def test_grey_palette_bilevel_and_16_bit_match_ultralytics_reading(
    name: str, tmp_path: Path
) -> None:
    # What `model.predict("file")` sees: ultralytics' own imread (OpenCV), as RGB.
    from ultralytics.utils.patches import imread

    data = MODE_VARIANTS[name]()
    suffix = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif"}[name.split("-")[-1]]
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(data)
    expected = imread(str(path))[..., ::-1]
    image = decode_image(data)
    assert image.array.shape == expected.shape
    assert np.array_equal(image.array, expected)


def test_alpha_is_dropped_like_ultralytics_does(tmp_path: Path) -> None:
    from ultralytics.utils.patches import imread

    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 1] = np.arange(60, dtype=np.uint8)[None, :]
    rgba[..., 3] = np.arange(40, dtype=np.uint8)[:, None] * 6  # from transparent to opaque
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    assert np.array_equal(decode_image(data).array, imread(str(tmp_path / "a.png"))[..., ::-1])
    assert np.array_equal(decode_image(data).array, rgba[..., :3])


def test_mpo_reads_the_first_frame() -> None:
    from tests.samples import mpo

    first = decode_image(mpo()).array
    assert np.abs(first.astype(np.int16) - np.asarray(bus_rgb())).mean() < LOSSY_MEAN_DIFF


def test_dng_is_developed_upright_by_libraw() -> None:
    assert is_dng(bayer_dng())
    assert not is_dng(encode(bus_rgb(), "TIFF"))
    assert not is_dng(b"II*\x00\xff\xff\xff\xff")  # IFD offset past the end
    # Orientation 6 (90 degrees clockwise): the portrait raw becomes landscape.
    turned = decode_image(bayer_dng(orientation=6))
    assert turned.format == "dng"
    assert turned.shape == (810, 1080)


def test_the_same_pixels_with_ultralytics_imported() -> None:
    """`import ultralytics` wraps PIL.Image.open; decoding must neither use it nor change."""
    import ultralytics  # noqa: F401

    assert Image.open.__module__ != "PIL.Image"
    assert np.array_equal(decode_image(bus_jpeg()).array, np.asarray(bus_rgb()))
    with pytest.raises(ApiError) as caught:  # the wrapper would try to install a HEIF plugin
        decode_image(b"not an image at all")
    assert caught.value.status == 400


# -- refusals -------------------------------------------------------------------------------
def rejected(data: bytes) -> str:
    with pytest.raises(ApiError) as caught:
        decode_image(data)
    assert caught.value.status == 400
    assert caught.value.message.startswith("Invalid image")
    return caught.value.message


def test_a_real_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = png_bomb(9000, 9000)  # 81 MP: over our limit, under Pillow's own warning
    assert len(bomb) < 200_000
    assert "9000x9000 exceeds the limit" in rejected(bomb)
    huge = png_bomb(12000, 12000)  # 144 MP: Pillow's own bomb check fires first
    assert "decompression bomb" in rejected(huge)


@pytest.mark.parametrize("size", [(65000, 65000), (9000, 9000), (8001, 8000)])
def test_headers_claiming_too_many_pixels_are_refused(size: tuple[int, int]) -> None:
    rejected(jpeg_with_size(*size))


def test_the_pixel_limit_is_configurable() -> None:
    with pytest.raises(ApiError) as caught:
        decode_image(bus_jpeg(), max_pixels=1000)
    assert "810x1080 exceeds the limit of 1000 pixels" in caught.value.message
    assert MAX_PIXELS >= 50_000_000  # a 50 MP phone photo must pass


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"<!doctype html><html><body>not an image</body></html>",
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        bus_jpeg()[: len(bus_jpeg()) // 2],
        b"\xff\xd8\xff",
        b"II*\x00" + bytes(100),
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    ],
    ids=["empty", "text", "html", "png-garbage", "truncated-jpeg", "jpeg-soi", "tiff-zeros", "eps"],
)
def test_broken_and_non_images_are_400(data: bytes) -> None:
    rejected(data)


def test_formats_outside_the_spec_are_refused() -> None:
    rejected(encode(bus_rgb(), "GIF"))
    rejected(encode(bus_rgb(), "PCX"))


# -- reduced-size JPEG decoding ---------------------------------------------------------------
@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """bus.jpg at 4x (14 MP), the size of a phone photo."""
    return encode(bus_rgb().resize((3240, 4320), Image.Resampling.LANCZOS), "JPEG", quality=92)


def test_draft_decodes_a_large_jpeg_at_reduced_size(big_jpeg: bytes) -> None:
    image = decode_image(big_jpeg, target_size=640)
    assert image.shape == (4320, 3240)
    assert image.array.shape == (1080, 810, 3)  # 1/4: the longer side still >= 640
    assert image.scale == (4.0, 4.0)
    assert decode_image(big_jpeg, target_size=1280).array.shape == (2160, 1620, 3)
    assert decode_image(big_jpeg).array.shape == (4320, 3240, 3)
    # Not for images under DRAFT_MIN_PIXELS, whatever their format.
    assert decode_image(bus_jpeg(), target_size=640).scale == (1.0, 1.0)
    assert decode_image(encode(bus_rgb(), "PNG"), target_size=64).scale == (1.0, 1.0)


def test_draft_keeps_the_upright_original_shape() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = bus_rgb().resize((3240, 4320)).transpose(Image.Transpose.ROTATE_90)
    image = decode_image(encode(stored, "JPEG", exif=exif.tobytes()), target_size=640)
    assert image.shape == (4320, 3240)
    assert image.array.shape == (1080, 810, 3)


def test_draft_decoded_detections_equal_full_decoding(big_jpeg: bytes) -> None:
    from tests.oracle import yolo

    def detect(image) -> tuple[list[int], np.ndarray, np.ndarray]:
        boxes = yolo("yolo26n").predict(image.array[..., ::-1], imgsz=640, verbose=False)[0].boxes
        sy, sx = image.scale
        return boxes.cls.int().tolist(), boxes.xyxy.numpy() * [sx, sy, sx, sy], boxes.conf.numpy()

    full_cls, full_xyxy, full_conf = detect(decode_image(big_jpeg))
    draft_cls, draft_xyxy, draft_conf = detect(decode_image(big_jpeg, target_size=640))
    assert full_cls == draft_cls and len(full_cls) >= 4
    tolerance = 0.005 * 4320  # half a percent of the longer side: 5 px at imgsz 640
    assert np.abs(full_xyxy - draft_xyxy).max() < tolerance
    assert np.abs(full_conf - draft_conf).max() < 0.03


def test_draft_factor_keeps_one_and_a_half_times_the_model_size() -> None:
    assert draft_factor(4032, 3024, 640) == 4  # 1008 >= 960; 1/8 would leave 504
    assert draft_factor(1280, 720, 640) == 1  # zidane.jpg at 640: decoded whole
    assert draft_factor(810, 1080, 32) == 1  # under 4 MP: always decoded whole
    assert draft_factor(2400, 1800, 320) == 4  # 4.3 MP at 320: 600 >= 480
    assert draft_factor(4032, 3024, 640, side="short") == 2  # 1512 >= 960 on the short side
    assert draft_factor(4032, 3024, None) == 1
    assert draft_factor(9000, 9000, 32) == 8  # never past libjpeg's smallest scale


def test_classification_drafts_by_the_shorter_side() -> None:
    wide = encode(bus_rgb().rotate(90, expand=True).resize((4320, 1620)), "JPEG")
    image = decode_image(wide, target_size=224, target_side="short")
    assert min(image.array.shape[:2]) >= 1.5 * 224
    assert image.shape == (1620, 4320)
    by_long_side = decode_image(wide, target_size=224)
    assert by_long_side.array.shape[0] < image.array.shape[0]


# -- tiled conversion: the pixels the whole-image conversion gave -----------------------------
def whole_image_rgb(data: bytes) -> np.ndarray:
    """decode_image's conversion before it went tile by tile: exif_transpose, then the whole
    image through int64 / float64 and np.repeat. The reference the tiles must match exactly."""
    with Image.open(io.BytesIO(data)) as image:
        upright = ImageOps.exif_transpose(image)
    mode = upright.mode
    if mode == "RGB":
        return np.asarray(upright)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(upright).astype(np.int64)
        shift = 8 if mode.startswith("I;16") or values.max(initial=0) > 255 else 0
        grey = np.clip(values >> shift, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(upright, dtype=np.float64))
        if values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        grey = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(upright.convert("RGB"))


def with_orientation(image: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, fmt, exif=exif.tobytes())


def _modes() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    rgb = Image.fromarray(rng.integers(0, 256, (29, 37, 3), dtype=np.uint8))
    u16 = rng.integers(0, 65536, (29, 37), dtype=np.uint16)
    floats = rng.random((29, 37), dtype=np.float32)
    floats[0, :3] = [np.nan, np.inf, -np.inf]
    halves = (np.arange(29 * 37, dtype=np.float32).reshape(29, 37) % 512) / 2  # x.5: rounding
    return {
        "RGB": encode(rgb, "PNG"),
        "L": encode(rgb.convert("L"), "PNG"),
        "P": encode(rgb.quantize(16), "PNG"),
        "1": encode(rgb.convert("1"), "TIFF"),
        "LA": encode(rgb.convert("LA"), "PNG"),
        "RGBA": encode(rgb.convert("RGBA"), "PNG"),
        "CMYK": encode(rgb.convert("CMYK"), "TIFF"),
        "I;16": encode(Image.fromarray(u16), "PNG"),
        "I;16B": encode(Image.frombytes("I;16B", (37, 29), u16.astype(">u2").tobytes()), "TIFF"),
        "I-wide": encode(Image.fromarray(u16.astype(np.int32) * 3 - 20000), "TIFF"),
        "I-narrow": encode(Image.fromarray((u16 >> 8).astype(np.int32)), "TIFF"),
        "F-unit": encode(Image.fromarray(floats, "F"), "TIFF"),
        "F-halves": encode(Image.fromarray(halves - 3, "F"), "TIFF"),
    }


MODE_SAMPLES = _modes()


@pytest.mark.parametrize("tile_pixels", [16, 100, 1 << 18], ids=["split-rows", "rows", "whole"])
@pytest.mark.parametrize("name", sorted(MODE_SAMPLES))
def test_tiles_give_the_whole_image_conversion(name: str, tile_pixels: int, monkeypatch) -> None:
    monkeypatch.setattr(images, "TILE_PIXELS", tile_pixels)
    data = MODE_SAMPLES[name]
    image = decode_image(data)
    assert image.array.dtype == np.uint8 and image.array.flags.c_contiguous
    assert np.array_equal(image.array, whole_image_rgb(data))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_every_exif_orientation_as_exif_transpose_turns_it(fmt: str, orientation: int) -> None:
    # TIFFs are turned by Pillow while loading; PNGs by decode_image; JPEGs by OpenCV.
    stored = bus_rgb().resize((64, 48))
    data = with_orientation(stored, fmt, orientation)
    image = decode_image(data)
    if fmt == "JPEG":
        with Image.open(io.BytesIO(data)) as reference:
            expected = np.asarray(ImageOps.exif_transpose(reference).convert("RGB"))
        assert image.array.shape == expected.shape
        assert np.abs(image.array.astype(np.int16) - expected).mean() < 1  # two libjpegs
    else:
        assert np.array_equal(image.array, whole_image_rgb(data))
    assert image.shape == image.array.shape[:2]


def test_a_grey_16_bit_tiff_turned_by_exif_in_tiles(monkeypatch) -> None:
    monkeypatch.setattr(images, "TILE_PIXELS", 100)
    grey = Image.open(io.BytesIO(MODE_SAMPLES["I;16"]))
    for orientation in (3, 6, 7):
        data = with_orientation(grey, "TIFF", orientation)
        assert np.array_equal(decode_image(data).array, whole_image_rgb(data))


# -- reduced decoding of the other formats -------------------------------------------------------
def box(array: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each factor x factor block, partial blocks at the far edges included."""
    rows, cols = array.shape[:2]
    starts = np.arange(0, rows, factor), np.arange(0, cols, factor)

    def block_sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, starts[0], axis=0), starts[1], axis=1)

    counts = block_sums(np.ones((rows, cols)))
    means = block_sums(array.astype(np.float64)) / (
        counts if array.ndim == 2 else counts[..., None]
    )
    return np.floor(means + 0.5).astype(np.uint8)


def assert_box_reduced(array: np.ndarray, expected: np.ndarray) -> None:
    assert array.shape == expected.shape
    assert np.abs(array.astype(np.int16) - expected).max() <= 1  # OpenCV's fixed-point rounding


def test_large_images_of_other_formats_are_box_reduced(monkeypatch) -> None:
    monkeypatch.setattr(images, "DRAFT_MIN_PIXELS", 1)
    stored = bus_rgb().resize((67, 49))  # partial blocks on two edges
    data = encode(stored, "PNG")
    assert draft_factor(67, 49, 10) == 4
    whole = decode_image(data, target_size=10)
    assert whole.shape == (49, 67) and whole.array.shape == (13, 17, 3)
    assert_box_reduced(whole.array, box(np.asarray(stored), 4))
    for tile_pixels in (16, 100, 300):  # tiles of whole blocks: the same pixels
        monkeypatch.setattr(images, "TILE_PIXELS", tile_pixels)
        assert np.array_equal(decode_image(data, target_size=10).array, whole.array)


def test_a_reduced_image_keeps_its_upright_original_shape(monkeypatch) -> None:
    monkeypatch.setattr(images, "DRAFT_MIN_PIXELS", 1)
    stored = bus_rgb().resize((64, 48))
    upright = np.ascontiguousarray(np.rot90(np.asarray(stored), -1))
    for fmt in ("PNG", "TIFF"):
        image = decode_image(with_orientation(stored, fmt, 6), target_size=10)
        assert image.shape == (64, 48) and image.scale == (4.0, 4.0)
        assert_box_reduced(image.array, box(upright, 4))


def test_grey_is_reduced_before_it_becomes_three_channels(monkeypatch) -> None:
    monkeypatch.setattr(images, "DRAFT_MIN_PIXELS", 1)
    monkeypatch.setattr(images, "TILE_PIXELS", 100)
    data = MODE_SAMPLES["I;16"]
    image = decode_image(data, target_size=10)  # 37 x 29 at 1/2
    assert image.array.shape == (15, 19, 3) and image.shape == (29, 37)
    assert (image.array == image.array[..., :1]).all()
    assert_box_reduced(image.array[..., 0], box(whole_image_rgb(data)[..., 0], 2))


def test_a_real_large_png_is_reduced_for_the_model() -> None:
    grey = bus_rgb().convert("L").resize((2400, 1800))
    image = decode_image(encode(grey, "PNG", compress_level=1), target_size=320)
    assert image.array.shape == (450, 600, 3)
    assert image.scale == (4.0, 4.0)


def test_a_dng_is_reduced_after_developing(monkeypatch) -> None:
    monkeypatch.setattr(images, "DRAFT_MIN_PIXELS", 1)
    image = decode_image(bayer_dng_from(bus_rgb().resize((64, 48))), target_size=10)
    assert image.shape == (48, 64) and image.array.shape == (12, 16, 3)


def test_jpeg_padding_longer_than_the_eoi_search_goes_through_pillow() -> None:
    padded = bus_jpeg() + bytes(images._EOI_SEARCH + 10)
    assert not images._is_complete_jpeg(padded)
    assert np.array_equal(decode_image(padded).array, np.asarray(bus_rgb()))


# -- the header-only memory estimate ---------------------------------------------------------
def test_probe_reads_the_header() -> None:
    probe = probe_image(bus_jpeg())
    assert (probe.format, probe.width, probe.height, probe.mode) == ("jpeg", 810, 1080, "RGB")
    assert probe.peak_bytes >= 3 * 810 * 1080  # at least the output
    assert decode_peak_bytes(bus_jpeg()) == probe.peak_bytes
    dng = probe_image(bayer_dng())
    assert (dng.format, dng.width, dng.height, dng.mode) == ("dng", 810, 1080, "raw")


def test_probe_is_cheap() -> None:
    data = bus_jpeg()
    best = min(timeit.repeat(lambda: decode_peak_bytes(data, 640), number=20, repeat=5)) / 20
    assert best < 0.001  # about 30 us here


def test_the_estimate_shrinks_with_the_model_size(big_jpeg: bytes) -> None:
    full, reduced = decode_peak_bytes(big_jpeg), decode_peak_bytes(big_jpeg, 640)
    assert reduced < full / 4
    png = encode(bus_rgb().convert("L").resize((2400, 1800)), "PNG", compress_level=1)
    # Decoded whole either way (Pillow's image), but the output is 1/16 the size.
    assert decode_peak_bytes(png, 320) < decode_peak_bytes(png)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
        encode(bus_rgb(), "GIF"),
        jpeg_with_size(9000, 9000),
        png_bomb(12000, 12000),
    ],
    ids=["empty", "text", "eps", "gif", "too-many-pixels", "bomb"],
)
def test_probe_refuses_what_decode_refuses_with_the_same_message(data: bytes) -> None:
    message = rejected(data)
    with pytest.raises(ApiError) as caught:
        probe_image(data)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_probe_applies_the_pixel_limit() -> None:
    with pytest.raises(ApiError) as caught:
        probe_image(bus_jpeg(), max_pixels=1000)
    assert "810x1080 exceeds the limit of 1000 pixels" in caught.value.message

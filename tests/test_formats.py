"""Every accepted format and pixel layout, through real HTTP, against the JPEG's detections.

Each variant is `bus.jpg` converted (tests/samples.py). Lossless variants must give exactly the
JPEG's response; lossy ones the same objects with boxes within a few pixels. Layouts that change
the pixels (grey, palette, 16-bit grey) must agree with Ultralytics reading the same file.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tests.oracle import assert_matches_oracle
from tests.samples import MODE_VARIANTS, VARIANTS, Variant, bus_jpeg

MODEL = "yolo26n"  # preloaded in the pool
SURE = 0.5  # detections this confident must survive a lossy re-encode


@cache
def variant_bytes(name: str) -> bytes:
    return next(v for v in VARIANTS if v.name == name).make()


@pytest.fixture(scope="module")
def jpeg_image(server) -> dict:
    response = server.predict(MODEL, bus_jpeg())
    assert response.status_code == 200, response.text
    image = response.json()["images"][0]
    assert len(image["results"]) >= 4
    return image


def matched(result: dict, candidates: list[dict], tolerance: float) -> bool:
    box = np.array(list(result["box"].values()))
    return any(
        c["class"] == result["class"]
        and np.abs(np.array(list(c["box"].values())) - box).max() <= tolerance
        for c in candidates
    )


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_format_gives_the_jpeg_s_detections(server, jpeg_image: dict, variant: Variant) -> None:
    response = server.predict(MODEL, variant_bytes(variant.name))
    assert response.status_code == 200, response.text
    image = response.json()["images"][0]
    assert image["shape"] == [1080, 810], "upright shape, EXIF orientation applied"
    if variant.lossless:
        assert image["results"] == jpeg_image["results"]
        return
    got, want = image["results"], jpeg_image["results"]
    assert {r["name"] for r in got if r["confidence"] >= SURE} == {
        r["name"] for r in want if r["confidence"] >= SURE
    }
    for result in want:
        if result["confidence"] >= SURE:
            assert matched(result, got, variant.box_tol), (variant.name, result)
    for result in got:
        if result["confidence"] >= SURE:
            assert matched(result, want, variant.box_tol), (variant.name, result)


@pytest.mark.parametrize("name", sorted(MODE_VARIANTS))
def test_pixel_layouts_agree_with_ultralytics_on_the_same_file(
    server, name: str, tmp_path: Path
) -> None:
    data = MODE_VARIANTS[name]()
    suffix = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif"}[name.split("-")[-1]]
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(data)
    response = server.predict(MODEL, data)
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["shape"] == [1080, 810]
    # Ultralytics reads the file itself (OpenCV): grey replicated, palette expanded, 16 -> 8 bit.
    assert_matches_oracle(response.json(), MODEL, path, box_tol=0.05, conf_tol=1e-3, imgsz=640)


def test_base64_source_gives_the_file_s_detections(server, jpeg_image: dict) -> None:
    import base64

    import requests

    for source in (
        base64.b64encode(bus_jpeg()).decode(),
        "data:image/jpeg;base64," + base64.b64encode(bus_jpeg()).decode(),
    ):
        response = requests.post(
            server.url(f"/api/models/{MODEL}/predict"),
            headers=server.headers(),
            files={"source": (None, source)},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert response.json()["images"][0]["results"] == jpeg_image["results"]

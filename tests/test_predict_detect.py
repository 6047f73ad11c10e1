"""The shared predict route on real weights, checked field by field and against Ultralytics."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.server_timing import parse_server_timing
from tests.oracle import assert_matches_oracle, oracle


def test_response_has_the_spec_fields(server, bus: Path) -> None:
    response = server.predict("yolo26n", bus, conf=0.25, iou=0.7, imgsz=640)
    assert response.status_code == 200, response.text
    body = response.json()
    image = body["images"][0]
    assert image["shape"] == [1080, 810]
    assert set(image["speed"]) == {"preprocess", "inference", "postprocess"}
    assert all(v >= 0 for v in image["speed"].values())
    assert image["results"], "bus.jpg has a bus and people in it"
    for result in image["results"]:
        assert set(result) == {"class", "name", "confidence", "box"}
        assert isinstance(result["class"], int)
        assert 0.25 <= result["confidence"] <= 1
        box = result["box"]
        assert 0 <= box["x1"] < box["x2"] <= 810
        assert 0 <= box["y1"] < box["y2"] <= 1080
    metadata = body["metadata"]
    assert metadata["imageCount"] == 1
    assert metadata["model"] == "yolo26n.pt"
    assert 0 < metadata["functionTimeCall"] < 60
    assert set(metadata["version"]) == {"ultralytics", "torch", "torchvision", "python"}


@pytest.mark.parametrize("model", ["yolo26n", "yolo11n"])
@pytest.mark.parametrize("image", ["bus.jpg", "zidane.jpg"])
def test_detections_equal_in_process_ultralytics(server, model: str, image: str) -> None:
    from shared.assets import example_image

    path = example_image(image)
    response = server.predict(model, path, conf=0.25, iou=0.7, imgsz=640)
    assert response.status_code == 200, response.text
    assert_matches_oracle(response.json(), model, path, conf=0.25, iou=0.7, imgsz=640)


def test_png_equals_jpeg(server, bus: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "bus.png"
    Image.open(bus).save(png)
    jpeg = server.predict("yolo26n", bus).json()["images"][0]
    lossless = server.predict("yolo26n", png).json()["images"][0]
    assert lossless["results"] == jpeg["results"]
    assert lossless["shape"] == jpeg["shape"]


def test_dedicated_endpoint_serves_its_model(server, zidane: Path) -> None:
    response = server.predict("", zidane, prefix="/endpoints/yolo26n")
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["model"] == "yolo26n.pt"
    assert {r["name"] for r in response.json()["images"][0]["results"]} >= {"person"}


def test_missing_key_is_401_json(server, bus: Path) -> None:
    import requests

    response = requests.post(
        server.url("/api/models/yolo26n/predict"), files={"file": bus.read_bytes()}, timeout=30
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()


def test_unknown_model_is_404(server, bus: Path) -> None:
    response = server.predict("no-such-model", bus)
    assert response.status_code == 404
    assert response.json() == {"error": "Model not found"}


def test_a_large_photo_is_decoded_reduced_with_full_decode_detections(
    server, bus: Path, tmp_path: Path
) -> None:
    """A 14 MP JPEG decodes at 1/4 scale in the ingress; boxes come back in the original's
    pixels and agree with Ultralytics on the full-size decode."""
    import cv2
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    with Image.open(bus) as small:
        small.resize((3240, 4320), Image.Resampling.LANCZOS).save(photo, quality=92)
    response = server.predict("", photo, prefix="/endpoints/yolo26n", imgsz=640)
    assert response.status_code == 200, response.text
    image = response.json()["images"][0]
    assert image["shape"] == [4320, 3240]
    expected = oracle("yolo26n", cv2.imread(str(photo)), imgsz=640, conf=0.25, iou=0.7).boxes
    got = image["results"]
    assert [r["class"] for r in got] == expected.cls.int().tolist()
    assert len(got) >= 4
    tolerance = 0.005 * 4320  # half a percent of the longer side
    for result, xyxy, conf in zip(got, expected.xyxy.tolist(), expected.conf.tolist(), strict=True):
        box = [result["box"][k] for k in ("x1", "y1", "x2", "y2")]
        assert max(abs(a - b) for a, b in zip(box, xyxy, strict=True)) < tolerance, (box, xyxy)
        assert abs(result["confidence"] - conf) < 0.03


def test_server_timing_splits_the_request(server, bus: Path) -> None:
    response = server.predict("", bus, prefix="/endpoints/yolo26n")
    assert response.status_code == 200, response.text
    timing = parse_server_timing(response.headers["Server-Timing"])
    assert list(timing) == [
        "upload", "decode", "model", "respond", "replica", "queue", "inference", "total"
    ]  # fmt: skip
    speed = response.json()["images"][0]["speed"]
    assert timing["inference"] == pytest.approx(sum(speed.values()), abs=0.1)
    # Each part lies within the part that holds it (to the header's rounding, 0.1 ms).
    assert timing["inference"] + timing["queue"] <= timing["replica"] + 0.2
    assert timing["replica"] <= timing["model"] + 0.1
    assert timing["upload"] + timing["decode"] + timing["model"] <= timing["total"] + 0.3

"""Every task through the shared route, against in-process Ultralytics on the same pixels.

The oracle gets exactly the array the service decodes (so this checks the model path and the
response shaping; decoding has its own tests). Tests are grouped by model, in the order the
multiplexed pool (3 models per replica) can serve them without reloading.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from shared.assets import example_image
from shared.images import decode_image
from tests.oracle import yolo
from tests.samples import aerial_boats, character

BOX_TOL = 0.05  # px: same pixels, same weights; only float summation order may differ
CONF_TOL = 1e-3
SEGMENT_TOL = 1.0  # px: a polygon vertex may move one mask pixel where a logit sits at 0.5


@cache
def image_bytes(name: str) -> bytes:
    return example_image(name).read_bytes()


def expected(model_id: str, data: bytes, imgsz: int = 640, **kwargs: Any) -> Any:
    # imgsz always explicit: without it Ultralytics uses the training size (1024 for DOTA OBB),
    # while the API's default is the spec's 640.
    bgr = np.ascontiguousarray(decode_image(data).array[..., ::-1])
    return yolo(model_id).predict(bgr, verbose=False, imgsz=imgsz, **kwargs)[0]


def predict(server, model_id: str, data: bytes, **fields: Any) -> list[dict]:
    response = server.predict(model_id, data, **fields)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["metadata"]["model"] == f"{model_id}.pt"
    return body["images"][0]["results"]


def xyxy(result: dict) -> list[float]:
    return [result["box"][k] for k in ("x1", "y1", "x2", "y2")]


def assert_same_boxes(results: list[dict], boxes: Any, names: dict[int, str]) -> None:
    assert len(results) == len(boxes)
    for got, box, conf, cls in zip(
        results, boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
    ):
        assert got["class"] == int(cls)
        assert got["name"] == names[int(cls)]
        assert got["confidence"] == pytest.approx(conf, abs=CONF_TOL)
        assert xyxy(got) == pytest.approx(box, abs=BOX_TOL)


# -- detect: the parameters change what Ultralytics computes, exactly as in-process -------------
@pytest.mark.parametrize(
    ("conf", "iou", "imgsz"), [(0.5, 0.5, 320), (0.1, 0.9, 1280), (0.01, 0.0, 64)]
)
def test_detect_parameters(server, conf: float, iou: float, imgsz: int) -> None:
    data = image_bytes("zidane.jpg")
    results = predict(server, "yolo26n", data, conf=conf, iou=iou, imgsz=imgsz)
    oracle = expected("yolo26n", data, conf=conf, iou=iou, imgsz=imgsz)
    assert_same_boxes(results, oracle.boxes, oracle.names)
    assert all(r["confidence"] >= conf for r in results)


def test_normalize_and_decimals(server) -> None:
    data = image_bytes("bus.jpg")
    pixels = predict(server, "yolo26n", data)
    normalized = predict(server, "yolo26n", data, normalize="true")
    assert len(pixels) == len(normalized) > 0
    for p, n in zip(pixels, normalized, strict=True):
        assert all(0 <= v <= 1 for v in n["box"].values())
        assert n["box"]["x1"] * 810 == pytest.approx(p["box"]["x1"], abs=0.01)
        assert n["box"]["y2"] * 1080 == pytest.approx(p["box"]["y2"], abs=0.01)
    rounded = predict(server, "yolo26n", data, decimals=0)
    assert all(float(v).is_integer() for r in rounded for v in r["box"].values())
    assert {r["confidence"] for r in rounded} <= {0.0, 1.0}


# -- segment ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_segment(server, name: str) -> None:
    data = image_bytes(name)
    results = predict(server, "yolo26n-seg", data)
    oracle = expected("yolo26n-seg", data)
    assert results, "people and a bus"
    assert_same_boxes(results, oracle.boxes, oracle.names)
    for got, polygon in zip(results, oracle.masks.xy, strict=True):
        assert set(got) == {"class", "name", "confidence", "box", "segments"}
        points = np.asarray(got["segments"], dtype=np.float64).reshape(-1, 2)
        assert len(points) >= 3
        assert all(isinstance(p, list) and len(p) == 2 for p in got["segments"])
        if len(points) == len(polygon):
            assert np.abs(points - polygon).max() <= SEGMENT_TOL
        else:  # a contour with a vertex more or less: same outline all the same
            assert abs(len(points) - len(polygon)) <= 2
            assert points.min(0) == pytest.approx(polygon.min(0), abs=SEGMENT_TOL)
            assert points.max(0) == pytest.approx(polygon.max(0), abs=SEGMENT_TOL)
        # The polygon lies inside its box.
        x1, y1, x2, y2 = xyxy(got)
        assert (points[:, 0] >= x1 - 1).all() and (points[:, 0] <= x2 + 1).all()
        assert (points[:, 1] >= y1 - 1).all() and (points[:, 1] <= y2 + 1).all()


# -- pose ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_pose(server, name: str) -> None:
    data = image_bytes(name)
    results = predict(server, "yolo11n-pose", data)
    oracle = expected("yolo11n-pose", data)
    assert results, "people"
    assert_same_boxes(results, oracle.boxes, oracle.names)
    for got, keypoints in zip(results, oracle.keypoints.data.numpy(), strict=True):
        assert set(got) == {"class", "name", "confidence", "box", "keypoints"}
        assert got["name"] == "person"
        assert len(got["keypoints"]) == 17
        assert all(set(k) == {"x", "y", "conf"} for k in got["keypoints"])
        xy = np.array([[k["x"], k["y"]] for k in got["keypoints"]])
        conf = np.array([k["conf"] for k in got["keypoints"]])
        assert np.abs(xy - keypoints[:, :2]).max() <= BOX_TOL
        assert np.abs(conf - keypoints[:, 2]).max() <= CONF_TOL


def test_pose_normalized(server) -> None:
    data = image_bytes("zidane.jpg")  # 1280 x 720
    pixels = predict(server, "yolo11n-pose", data)
    normalized = predict(server, "yolo11n-pose", data, normalize="true")
    for p, n in zip(pixels, normalized, strict=True):
        for kp, kn in zip(p["keypoints"], n["keypoints"], strict=True):
            assert kn["x"] * 1280 == pytest.approx(kp["x"], abs=0.02)
            assert kn["y"] * 720 == pytest.approx(kp["y"], abs=0.02)
            assert kn["conf"] == kp["conf"]


# -- obb ----------------------------------------------------------------------------------------
def test_obb(server) -> None:
    data = aerial_boats()
    results = predict(server, "yolo26n-obb", data)
    oracle = expected("yolo26n-obb", data)
    assert len(results) >= 3, "the synthetic piers are found"
    assert_same_boxes(results, oracle.obb, oracle.names)
    rotated = 0
    for got, corners in zip(results, oracle.obb.xyxyxyxy.numpy(), strict=True):
        assert set(got) == {"class", "name", "confidence", "box", "obb"}
        assert list(got["obb"]) == ["x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"]
        points = np.array(list(got["obb"].values())).reshape(4, 2)
        assert np.abs(points - corners).max() <= BOX_TOL
        # `box` is the axis-aligned box around the four corners.
        assert xyxy(got) == pytest.approx([*points.min(0), *points.max(0)], abs=0.01)
        xs = points[:, 0]
        at_an_edge = np.isclose(xs, xs.min(), atol=0.5) | np.isclose(xs, xs.max(), atol=0.5)
        rotated += not at_an_edge.all()  # an axis-aligned box has every corner at an edge
    assert rotated >= 2, "boxes at odd angles, not axis-aligned ones"


# -- classify -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["A", "7", "3"])
def test_classify(server, text: str) -> None:
    data = character(text)
    results = predict(server, "chars-cls", data)
    oracle = expected("chars-cls", data, imgsz=96)
    assert len(results) == 5
    assert all(set(r) == {"class", "name", "confidence"} for r in results)
    assert [r["class"] for r in results] == list(oracle.probs.top5)
    assert [r["confidence"] for r in results] == pytest.approx(
        oracle.probs.top5conf.tolist(), abs=CONF_TOL
    )
    confidences = [r["confidence"] for r in results]
    assert confidences == sorted(confidences, reverse=True)
    assert results[0]["name"] == text, "Pillow's font is readable to the model"


def test_classify_ignores_box_parameters_but_checks_them(server) -> None:
    data = character("A")
    assert predict(server, "chars-cls", data, conf=0.9, iou=0.1)[0]["name"] == "A"
    response = server.predict("chars-cls", data, conf=2)
    assert response.status_code == 400
    assert "'conf'" in response.json()["error"]

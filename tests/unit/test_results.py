"""Result shaping per task: the spec's fields, original-image pixels, normalize and decimals."""

from __future__ import annotations

import numpy as np
import pytest

from shared.params import PredictParams
from shared.results import Prediction, shape_response, shape_results
from tests.samples import SAMPLE_NAMES as NAMES
from tests.samples import SAMPLE_SPEED as SPEED
from tests.samples import sample_detections

detect = sample_detections


def test_detect_fields_and_values() -> None:
    results = shape_results(detect(), (400, 300), (400, 300), PredictParams())
    assert results == [
        {
            "class": 1,
            "name": "bus",
            "confidence": 0.91235,
            "box": {"x1": 10.0, "y1": 20.0, "x2": 110.0, "y2": 220.0},
        },
        {
            "class": 0,
            "name": "person",
            "confidence": 0.3,
            "box": {"x1": 0.0, "y1": 0.0, "x2": 5.5, "y2": 7.25},
        },
    ]
    for result in results:
        assert type(result["class"]) is int
        assert all(type(v) is float for v in result["box"].values())


def test_coordinates_are_mapped_from_a_reduced_array_to_original_pixels() -> None:
    # The model saw a quarter-size (draft) decode: 100 x 75 for a 400 x 300 original.
    results = shape_results(detect(), (400, 300), (100, 75), PredictParams())
    assert results[0]["box"] == {"x1": 40.0, "y1": 80.0, "x2": 440.0, "y2": 880.0}


def test_normalize_divides_by_width_and_height() -> None:
    results = shape_results(detect(), (400, 300), (400, 300), PredictParams(normalize=True))
    assert results[0]["box"] == pytest.approx(
        {"x1": 10 / 300, "y1": 20 / 400, "x2": 110 / 300, "y2": 220 / 400}, abs=1e-5
    )


def test_decimals_round_coordinates_and_confidence() -> None:
    results = shape_results(detect(), (400, 300), (400, 300), PredictParams(decimals=0))
    assert results[0]["confidence"] == 1.0
    assert results[1]["box"] == {"x1": 0.0, "y1": 0.0, "x2": 6.0, "y2": 7.0}


def test_no_detections_is_an_empty_list() -> None:
    empty = Prediction(
        task="detect",
        names=NAMES,
        boxes=np.zeros((0, 4), np.float32),
        confidence=np.zeros(0, np.float32),
        classes=np.zeros(0, np.int64),
        speed=SPEED,
    )
    assert shape_results(empty, (10, 10), (10, 10), PredictParams()) == []


def test_segment_polygons_are_lists_of_xy_points() -> None:
    polygons = [np.array([[10, 20], [110, 20], [60, 220]], np.float32), np.zeros((0, 2))]
    results = shape_results(
        detect(task="segment", segments=polygons), (400, 300), (200, 150), PredictParams()
    )
    assert set(results[0]) == {"class", "name", "confidence", "box", "segments"}
    assert results[0]["segments"] == [[20.0, 40.0], [220.0, 40.0], [120.0, 440.0]]
    assert results[1]["segments"] == []


def test_pose_keypoints_are_x_y_conf_objects() -> None:
    keypoints = np.zeros((2, 17, 3), np.float32)
    keypoints[0, 0] = [30.0, 40.0, 0.987654]
    results = shape_results(
        detect(task="pose", keypoints=keypoints),
        (400, 300),
        (400, 300),
        PredictParams(normalize=True, decimals=3),
    )
    assert set(results[0]) == {"class", "name", "confidence", "box", "keypoints"}
    assert len(results[0]["keypoints"]) == 17
    # x, y normalized; the keypoint confidence is not a coordinate and stays as is.
    assert results[0]["keypoints"][0] == {"x": 0.1, "y": 0.1, "conf": 0.988}


def test_obb_has_the_axis_aligned_box_and_four_corners_in_order() -> None:
    corners = np.array([[[50, 10], [90, 50], [50, 90], [10, 50]]], np.float32)
    prediction = Prediction(
        task="obb",
        names=["plane", "ship"],
        boxes=np.array([[10, 10, 90, 90]], np.float32),
        confidence=np.array([0.8], np.float32),
        classes=np.array([1]),
        obb=corners,
        speed=SPEED,
    )
    (result,) = shape_results(prediction, (200, 200), (100, 100), PredictParams())
    assert result["name"] == "ship"
    assert result["box"] == {"x1": 20.0, "y1": 20.0, "x2": 180.0, "y2": 180.0}
    assert list(result["obb"]) == ["x1", "y1", "x2", "y2", "x3", "y3", "x4", "y4"]
    assert list(result["obb"].values()) == [100.0, 20.0, 180.0, 100.0, 100.0, 180.0, 20.0, 100.0]


def test_classify_is_the_top5_without_boxes() -> None:
    prediction = Prediction(
        task="classify",
        names=[str(i) for i in range(10)],
        top5=[(7, 0.9), (1, 0.05), (2, 0.02), (3, 0.01), (4, 0.005)],
        speed=SPEED,
    )
    results = shape_results(prediction, (96, 96), (96, 96), PredictParams())
    assert results[0] == {"class": 7, "name": "7", "confidence": 0.9}
    assert [r["class"] for r in results] == [7, 1, 2, 3, 4]
    assert all(set(r) == {"class", "name", "confidence"} for r in results)


def test_response_envelope() -> None:
    body = shape_response(
        [],
        (1080, 810),
        SPEED,
        model_file="yolo26n.pt",
        versions={"ultralytics": "8.4.0"},
        elapsed_s=0.0123456,
    )
    assert body == {
        "images": [
            {
                "shape": [1080, 810],
                "results": [],
                "speed": {"preprocess": 1.23, "inference": 10.0, "postprocess": 0.5},
            }
        ],
        "metadata": {
            "imageCount": 1,
            "functionTimeCall": 0.0123,
            "model": "yolo26n.pt",
            "version": {"ultralytics": "8.4.0"},
        },
    }

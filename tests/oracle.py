"""In-process Ultralytics on the same weights: what the API must agree with."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from shared.registry import load_registry


@cache
def yolo(model_id: str):
    from ultralytics import YOLO

    spec = load_registry()[model_id]
    return YOLO(str(spec.path), task=spec.task)


def oracle(model_id: str, image: Path | Any, **kwargs) -> Any:
    source = str(image) if isinstance(image, Path) else image
    return yolo(model_id).predict(source, verbose=False, **kwargs)[0]


def assert_matches_oracle(
    body: dict,
    model_id: str,
    image: Path | Any,
    *,
    box_tol: float = 1.0,
    conf_tol: float = 0.01,
    **kwargs,
) -> None:
    """Same count and classes, boxes within `box_tol` px, confidences within `conf_tol`."""
    expected = oracle(model_id, image, **kwargs)
    results = body["images"][0]["results"]
    boxes = expected.boxes
    assert len(results) == len(boxes), (len(results), len(boxes))
    for got, xyxy, conf, cls in zip(
        results, boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist(), strict=True
    ):
        assert got["class"] == int(cls)
        assert abs(got["confidence"] - conf) <= conf_tol
        box = got["box"]
        for k, v in zip(("x1", "y1", "x2", "y2"), xyxy, strict=True):
            assert abs(box[k] - v) <= box_tol, (k, box[k], v)

"""Model output (plain arrays) -> the spec's JSON, per task.

The model deployment returns a `Prediction` dict in the coordinates of the array it was given;
`shape_image` maps it to original-image pixels (the array may be a reduced-size decode),
optionally normalizes by width/height, and rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from shared.params import PredictParams


class Prediction(TypedDict, total=False):
    task: str
    names: Sequence[str]  # class index -> name
    boxes: np.ndarray  # (N, 4) xyxy
    confidence: np.ndarray  # (N,)
    classes: np.ndarray  # (N,) int
    segments: list[np.ndarray]  # N polygons, each (K, 2) xy
    keypoints: np.ndarray  # (N, K, 3) x, y, conf
    obb: np.ndarray  # (N, 4, 2) corner points
    top5: list[tuple[int, float]]  # classify: (class, confidence), highest first
    speed: dict[str, float]  # ms, measured in the model replica
    timing: dict[str, float]  # ms in the model replica: "queue" (batch wait), "replica" (all)


def _scaled(
    points: np.ndarray, sx: float, sy: float, width: int, height: int, params: PredictParams
) -> np.ndarray:
    """Map (..., 2) xy points to original pixels (or 0-1 when normalizing), rounded."""
    out = np.asarray(points, dtype=np.float64).copy()
    out[..., 0] *= sx
    out[..., 1] *= sy
    if params.normalize:
        out[..., 0] /= width
        out[..., 1] /= height
    return np.round(out, params.decimals)


def _box(xyxy: np.ndarray) -> dict[str, float]:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def shape_results(
    prediction: Prediction,
    shape: tuple[int, int],
    array_shape: tuple[int, int],
    params: PredictParams,
) -> list[dict[str, Any]]:
    """The `results` list for one image. `shape`/`array_shape` are (height, width)."""
    height, width = shape
    sy, sx = height / array_shape[0], width / array_shape[1]
    names = prediction["names"]
    if prediction["task"] == "classify":
        return [
            {"class": int(c), "name": names[int(c)], "confidence": round(float(p), params.decimals)}
            for c, p in prediction["top5"]
        ]

    def scale(points: np.ndarray) -> np.ndarray:
        return _scaled(points, sx, sy, width, height, params)

    boxes = scale(np.asarray(prediction["boxes"]).reshape(-1, 2, 2)).reshape(-1, 4)
    confidences = np.round(np.asarray(prediction["confidence"], dtype=np.float64), params.decimals)
    results: list[dict[str, Any]] = []
    for i, (cls, conf) in enumerate(zip(prediction["classes"], confidences, strict=True)):
        item: dict[str, Any] = {
            "class": int(cls),
            "name": names[int(cls)],
            "confidence": float(conf),
            "box": _box(boxes[i]),
        }
        if "segments" in prediction:
            item["segments"] = scale(prediction["segments"][i]).tolist()
        if "keypoints" in prediction:
            kpts = np.asarray(prediction["keypoints"][i], dtype=np.float64)
            xy = scale(kpts[:, :2])
            kconf = np.round(kpts[:, 2], params.decimals)
            item["keypoints"] = [
                {"x": float(x), "y": float(y), "conf": float(c)}
                for (x, y), c in zip(xy, kconf, strict=True)
            ]
        if "obb" in prediction:
            corners = scale(prediction["obb"][i]).reshape(-1)
            item["obb"] = {
                f"{axis}{n}": float(corners[2 * (n - 1) + (axis == "y")])
                for n in range(1, 5)
                for axis in ("x", "y")
            }
        results.append(item)
    return results


def image_entry(
    shape: tuple[int, int], image_results: list[dict[str, Any]], speed: dict[str, float]
) -> dict[str, Any]:
    """One `images[]` entry: an image's (or a video frame's) shape, results and speed."""
    return {
        "shape": [int(shape[0]), int(shape[1])],
        "results": image_results,
        "speed": {k: round(float(v), 2) for k, v in speed.items()},
    }


def response_metadata(
    image_count: int,
    *,
    model_file: str,
    versions: dict[str, str],
    elapsed_s: float,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The response's `metadata`: the spec's fields, then this server's additions."""
    metadata: dict[str, Any] = {
        "imageCount": image_count,
        "functionTimeCall": round(elapsed_s, 4),
        "model": model_file,
        "version": versions,
    }
    if extra_metadata:
        metadata.update(extra_metadata)
    return metadata


def shape_response(
    image_results: list[dict[str, Any]],
    shape: tuple[int, int],
    speed: dict[str, float],
    *,
    model_file: str,
    versions: dict[str, str],
    elapsed_s: float,
    extra_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole response body for a single-image request."""
    return {
        "images": [image_entry(shape, image_results, speed)],
        "metadata": response_metadata(
            1,
            model_file=model_file,
            versions=versions,
            elapsed_s=elapsed_s,
            extra_metadata=extra_metadata,
        ),
    }

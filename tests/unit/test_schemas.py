"""What shared/results.py builds is what deployments/schemas.py declares, for every task: a drift
between the dict-building code and the contract (and so /openapi.json) fails here in seconds."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from deployments import schemas
from shared.params import PredictParams
from shared.results import Prediction, shape_response, shape_results
from tests.samples import SAMPLE_NAMES as NAMES
from tests.samples import SAMPLE_SPEED as SPEED
from tests.samples import sample_detections

VERSIONS = {"ultralytics": "8.4.0", "torch": "2.14.1", "torchvision": "0.29.1", "python": "3.11"}


def prediction(task: str) -> Prediction:
    if task == "classify":
        return Prediction(
            task=task, names=NAMES, top5=[(2, 0.9), (0, 0.07), (1, 0.03)], speed=SPEED
        )
    extra: dict[str, Any] = {
        "segment": {"segments": [np.array([[10, 20], [110, 20], [60, 220]]), np.zeros((0, 2))]},
        "pose": {"keypoints": np.random.default_rng(0).random((2, 17, 3)) * [100, 100, 1]},
        "obb": {"obb": np.array([[[50, 10], [90, 50], [50, 90], [10, 50]]] * 2, np.float32)},
        "detect": {},
    }[task]
    return sample_detections(task, **extra)


def body(task: str, params: PredictParams | None = None) -> dict[str, Any]:
    """A response body exactly as the ingress builds it."""
    p = prediction(task)
    results = shape_results(p, (400, 300), (200, 150), params or PredictParams())
    return shape_response(
        results,
        (400, 300),
        p["speed"],
        model_file=f"yolo26n-{task}.pt",
        versions=VERSIONS,
        elapsed_s=0.0123456,
        extra_metadata={"task": task, "classNames": list(p["names"])},
    )


def validate(data: dict[str, Any]) -> schemas.PredictResponse:
    # As the response check does: the JSON on the wire, not the Python objects.
    return schemas.PredictResponse.model_validate_json(json.dumps(data))


TASKS = list(schemas.RESULT_TYPES)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    "params", [PredictParams(), PredictParams(normalize=True, decimals=0)], ids=["pixels", "norm"]
)
def test_built_bodies_match_their_task_s_model(task: str, params: PredictParams) -> None:
    response = validate(body(task, params))
    results = response.images[0].results
    assert results and all(type(r) is schemas.RESULT_TYPES[task] for r in results)


def test_the_spec_s_own_example_and_a_body_without_our_additions_match() -> None:
    data = body("detect")
    del data["metadata"]["task"], data["metadata"]["classNames"]
    validate(data)


def _broken(task: str, change) -> dict[str, Any]:
    data = body(task)
    change(data, data["images"][0]["results"][0])
    return data


@pytest.mark.parametrize(
    ("task", "change", "complaint"),
    [
        ("detect", lambda d, r: r.pop("box"), "Classification, not a detect result"),
        ("detect", lambda d, r: r.update(cls=r.pop("class")), "cls"),
        ("detect", lambda d, r: r["box"].update(x1="10"), "valid number"),
        ("detect", lambda d, r: r.update(confidence=1.5), "less than or equal to 1"),
        ("segment", lambda d, r: r.pop("segments"), "Detection, not a segment result"),
        ("segment", lambda d, r: r.update(segments=[[1.0, 2.0, 3.0]]), "at most 2 items"),
        ("pose", lambda d, r: r["keypoints"][0].pop("conf"), "conf"),
        ("obb", lambda d, r: r["obb"].pop("y4"), "y4"),
        ("classify", lambda d, r: r.update(name="dog"), "is not named 'dog'"),
        ("detect", lambda d, r: d["images"][0].pop("speed"), "speed"),
        ("detect", lambda d, r: d["images"][0]["speed"].pop("inference"), "inference"),
        ("detect", lambda d, r: d["metadata"].update(imageCount="1"), "valid integer"),
        ("detect", lambda d, r: d["metadata"].update(extra=1), "Extra inputs"),
        ("detect", lambda d, r: d["images"].append(d["images"][0]), "imageCount 1 for 2"),
        ("detect", lambda d, r: d["images"][0].update(shape=[400]), "shape"),
    ],
)
def test_drift_fails(task: str, change, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        validate(_broken(task, change))


def test_the_other_bodies() -> None:
    schemas.ModelList.model_validate({"models": [{"id": "a", "task": "pose", "file": "a.pt"}]})
    schemas.ServiceHealth.model_validate({"healthy": True, "status": "ok"})
    healthy = {"healthy": True, "status": "ready", "latencyMs": 1.2, "model": "a", "task": "obb"}
    schemas.EndpointHealth.model_validate(healthy)
    down = {"healthy": False, "status": "busy", "latencyMs": None, "model": "a", "task": None}
    schemas.EndpointDown.model_validate(down)
    with pytest.raises(ValidationError):
        schemas.EndpointHealth.model_validate(down)
    schemas.Error.model_validate({"error": "x", "requestId": "abc"})
    for bad in ({"error": ""}, {"message": "x"}, {"error": "x", "requestId": None}):
        with pytest.raises(ValidationError):
            schemas.Error.model_validate(bad)
    with pytest.raises(ValidationError):
        schemas.ModelList.model_validate({"models": [{"id": "a", "task": "depth", "file": "a"}]})


def test_the_form_wants_an_image() -> None:
    schemas.PredictForm.model_validate({"source": "aGk=", "conf": 0.5})
    schemas.PredictForm.model_validate({"file": b"x", "source": "aGk="})  # images may be several
    for bad in ({}, {"conf": 0.5}, {"source": "aGk=", "conf": 2}):
        with pytest.raises(ValidationError):
            schemas.PredictForm.model_validate(bad)
    with pytest.raises(ValidationError):
        schemas.SourceForm.model_validate({"file": b"x"})

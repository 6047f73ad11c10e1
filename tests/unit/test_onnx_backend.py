"""The ONNX Runtime backend: exported once, cached by content, same detections as PyTorch.

No Ray: the replica's own loading code (deployments/yolo.py) on a private copy of the weights.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.onnx_backend import cache_path, cached_export
from deployments.yolo import load_model
from shared.assets import example_image
from shared.registry import ModelSpec, load_registry


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    real = load_registry()["yolo26n"]
    if not real.path.is_file():
        pytest.skip("weights not fetched (`yolo-endpoints weights`)")
    copy = tmp_path_factory.mktemp("weights") / real.path.name
    shutil.copyfile(real.path, copy)
    return dataclasses.replace(real, path=copy)


def test_cache_name_follows_content(spec: ModelSpec, tmp_path: Path) -> None:
    other = tmp_path / spec.path.name
    shutil.copyfile(spec.path, other)
    same = dataclasses.replace(spec, path=other)
    assert cache_path(same).name == cache_path(spec).name
    with open(other, "ab") as f:
        f.write(b"\0")  # different weights must never reuse an old export
    assert cache_path(same).name != cache_path(spec).name


def test_exported_once_and_reused(spec: ModelSpec) -> None:
    first = cached_export(spec)
    stamp = first.stat().st_mtime_ns
    assert cached_export(spec) == first
    assert first.stat().st_mtime_ns == stamp
    assert first.parent == spec.path.parent
    assert not list(spec.path.parent.glob(".export-*"))  # no half-finished exports left behind


@pytest.mark.parametrize("image", ["bus.jpg", "zidane.jpg"])
def test_onnx_detections_match_torch(spec: ModelSpec, image: str) -> None:
    rgb = np.asarray(Image.open(example_image(image)).convert("RGB"))
    torch_model = load_model(spec, backend="torch")
    onnx_model = load_model(spec, backend="onnx", threads=2)
    assert onnx_model.backend == "onnx"
    a = torch_model.run([rgb], 0.25, 0.7, 640)[0]
    b = onnx_model.run([rgb], 0.25, 0.7, 640)[0]
    assert len(a["classes"]) > 0
    np.testing.assert_array_equal(a["classes"], b["classes"])
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1.0)
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=0.01)


def test_unknown_backend_is_refused(spec: ModelSpec) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        load_model(spec, backend="tensorrt")

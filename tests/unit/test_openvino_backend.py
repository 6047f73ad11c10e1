"""The OpenVINO backend: exported once, cached by content, one thread, same detections as PyTorch.

No Ray: the replica's own loading code (deployments/yolo.py) on a private copy of the weights.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.openvino_backend import SUFFIX, cache_path, cached_export, compiled_settings
from deployments.yolo import LoadedModel, load_model
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


@pytest.fixture(scope="module")
def models(spec: ModelSpec) -> dict[str, LoadedModel]:
    # Loaded once for the module: the export (~3 s) happens here, the tests reuse it.
    return {
        "torch": load_model(spec, backend="torch"),
        "openvino": load_model(spec, backend="openvino", threads=1),
    }


def test_cache_name_follows_content(spec: ModelSpec, tmp_path: Path) -> None:
    other = tmp_path / spec.path.name
    shutil.copyfile(spec.path, other)
    same = dataclasses.replace(spec, path=other)
    assert cache_path(same).name == cache_path(spec).name
    assert cache_path(spec).name.endswith(SUFFIX)  # how Ultralytics recognises the format
    with open(other, "ab") as f:
        f.write(b"\0")  # different weights must never reuse an old export
    assert cache_path(same).name != cache_path(spec).name


def test_exported_once_and_reused(spec: ModelSpec, models: dict[str, LoadedModel]) -> None:
    first = cached_export(spec)
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    assert cached_export(spec) == first
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == stamps
    assert first.parent == spec.path.parent
    assert {p.suffix for p in first.iterdir()} >= {".xml", ".bin", ".yaml"}
    assert not list(spec.path.parent.glob(".export-*"))  # no half-finished exports left behind


def test_one_thread_unpinned_fp32(models: dict[str, LoadedModel]) -> None:
    assert models["openvino"].backend == "openvino"
    assert compiled_settings(models["openvino"].model) == {
        "INFERENCE_NUM_THREADS": "1",
        "NUM_STREAMS": "1",
        "INFERENCE_PRECISION_HINT": "<Type: 'float32'>",
        "ENABLE_CPU_PINNING": "False",
    }


@pytest.mark.parametrize("imgsz", [640, 320])
@pytest.mark.parametrize("image", ["bus.jpg", "zidane.jpg"])
def test_openvino_detections_match_torch(
    models: dict[str, LoadedModel], image: str, imgsz: int
) -> None:
    rgb = np.asarray(Image.open(example_image(image)).convert("RGB"))
    a = models["torch"].run([rgb], 0.25, 0.7, imgsz)[0]
    b = models["openvino"].run([rgb], 0.25, 0.7, imgsz)[0]
    assert len(a["classes"]) > 0
    np.testing.assert_array_equal(a["classes"], b["classes"])
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1.0)
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=0.01)


def test_dynamic_input_keeps_rectangular_letterbox(models: dict[str, LoadedModel]) -> None:
    # A static export would letterbox every image to imgsz x imgsz; the dynamic one does not.
    model = models["openvino"]
    rgb = np.asarray(Image.open(example_image("zidane.jpg")).convert("RGB"))  # 1280x720
    for imgsz, expected in ((640, (1, 3, 384, 640)), (320, (1, 3, 192, 320))):
        seen: list[tuple[int, ...]] = []
        backend = model.model.predictor.model.backend
        compiled = backend.ov_compiled_model

        def spy(im, _compiled=compiled, _seen=seen):
            _seen.append(tuple(im.shape))
            return _compiled(im)

        backend.ov_compiled_model = spy
        try:
            model.run([rgb], 0.25, 0.7, imgsz)
        finally:
            backend.ov_compiled_model = compiled
        assert seen == [expected]

"""The ingress' resize gives the network exactly the pixels Ultralytics' LetterBox would."""

from __future__ import annotations

import numpy as np
import pytest
from ultralytics.data.augment import LetterBox

from shared.letterbox import letterbox_resize, letterbox_size

SIZES = [(1080, 810), (810, 1080), (720, 1280), (1281, 719), (641, 640), (3000, 17), (13, 2000)]


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth gradients with noise: interpolation differences would show, unlike flat colour.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256], -1)
    return (base + rng.integers(0, 40, (height, width, 3))).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("auto", [False, True])  # ONNX's fixed square / PyTorch's rectangle
@pytest.mark.parametrize("imgsz", [320, 640, 1280])
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_the_model_sees_the_same_pixels(height: int, width: int, imgsz: int, auto: bool) -> None:
    image = _photo(height, width, seed=height * width)
    letterbox = LetterBox((imgsz, imgsz), auto=auto, stride=32)
    resized = letterbox_resize(image, "detect", imgsz)
    assert resized.shape[0] <= max(imgsz, height) and resized.shape[1] <= max(imgsz, width)
    np.testing.assert_array_equal(letterbox(image=resized), letterbox(image=image))


def test_only_shrinking_resizes_and_only_for_letterboxed_tasks() -> None:
    image = _photo(1080, 810, seed=1)
    assert letterbox_size(1080, 810, 640) == (480, 640)
    assert letterbox_size(480, 640, 640) is None  # already at its size: nothing to do
    assert letterbox_size(100, 50, 640) is None  # the model scales it up itself
    assert letterbox_resize(image, "classify", 640) is image  # a centre crop of its own
    assert letterbox_resize(image, "detect", 650) is image  # Ultralytics rounds it to 672
    assert letterbox_resize(image, "obb", 640).shape == (640, 480, 3)

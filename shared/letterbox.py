"""The resize half of Ultralytics' LetterBox, done in the ingress: the model gets the same pixels.

Ultralytics' predictor letterboxes every detect, segment, pose and OBB input: it scales the image
by r = min(S / h, S / w), S being imgsz rounded up to the model's stride, to
(round(w * r), round(h * r)) with cv2.INTER_LINEAR, then pads. Doing that resize here sends the
model replica an array of at most S x S instead of the full decode (bus.jpg: 0.9 MB instead of
2.6 MB through the object store) and takes the resize off the replica. The replica's own
LetterBox then finds the image already at its target size (r = 1 there: the limiting side is S
exactly) and only pads, so the network sees the pixels it would have seen from the full image.
`shape_results` maps the answers back to the original's pixels as for any reduced array.

Images that would be scaled up, classification (a centre crop of its own) and a size that is no
multiple of the stride go to the model untouched: there the model's own pre-processing decides.
"""

from __future__ import annotations

import cv2
import numpy as np

# The largest stride of every model in the registry (YOLO's P3-P5 heads); an imgsz that is a
# multiple of it is the size Ultralytics' check_imgsz keeps.
STRIDE = 32
LETTERBOXED_TASKS = frozenset({"detect", "segment", "pose", "obb"})


def letterbox_size(height: int, width: int, imgsz: int) -> tuple[int, int] | None:
    """(width, height) LetterBox would resize to; None where it would not shrink the image."""
    r = min(imgsz / height, imgsz / width)
    if r >= 1:
        return None
    return max(round(width * r), 1), max(round(height * r), 1)


def letterbox_target(shape: tuple[int, ...], task: str, imgsz: int) -> tuple[int, int] | None:
    """(width, height) to resize an array of `shape` to here; None: it goes as it is."""
    if task not in LETTERBOXED_TASKS or imgsz % STRIDE:
        return None
    size = letterbox_size(shape[0], shape[1], imgsz)
    return None if size == (shape[1], shape[0]) else size


def letterbox_resize(image: np.ndarray, task: str, imgsz: int) -> np.ndarray:
    """`image` as Ultralytics' LetterBox would resize it before padding (or itself)."""
    size = letterbox_target(image.shape, task, imgsz)
    if size is None:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)

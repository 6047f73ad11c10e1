"""Stand-ins for Serve deployment handles, for the in-process tests of the ingress and its gate.

They answer what the real deployments answer (the limiter with the real SlidingWindow), through
the handle's call shape: `handle.options(...).method.remote(*args)`, awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.ratelimit import RateLimit, SlidingWindow


class _Call:
    """What `.remote()` returns: awaitable once, like a DeploymentResponse."""

    def __init__(self, answer: Callable[[], Any]):
        self.answer = answer

    def __await__(self):
        yield from asyncio.sleep(0).__await__()
        return self.answer()


class _Method:
    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def remote(self, *args: Any) -> _Call:
        return _Call(lambda: self.fn(*args))


class FakeLimiter:
    """The Limiter deployment's handle, counting with the real sliding window."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = lambda: 0.0):
        self.window = SlidingWindow(limit)
        self.calls = 0
        self.acquire = _Method(self._acquire)
        self.clock = clock

    def _acquire(self, key_id: str, limit: int | None):
        self.calls += 1
        return self.window.acquire(key_id, self.clock(), limit)


class FakeModel:
    """A model deployment's handle that finds one person at (10, 20, 110, 220) of any image,
    in the coordinates of the array it was sent, or raises `fails` when set."""

    def __init__(self, fails: Exception | None = None):
        self.fails = fails
        self.seen: list[tuple[str, tuple[int, ...]]] = []  # (model ID, array shape) per call
        self.predict = _Method(self._predict)
        self.describe = _Method(self._describe)

    def options(self, **_: Any) -> FakeModel:
        return self

    def _predict(self, model_id: str, image: np.ndarray, conf: float, iou: float, imgsz: int):
        if self.fails is not None:
            raise self.fails
        self.seen.append((model_id, image.shape))
        return {
            "task": "detect",
            "names": ["person", "bicycle"],
            "boxes": np.array([[10.0, 20.0, 110.0, 220.0]], np.float32),
            "confidence": np.array([0.875], np.float32),
            "classes": np.array([0]),
            "speed": {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5},
            "model": f"{model_id}.pt",
            "versions": {"ultralytics": "test"},
            "timing": {"queue": 0.1, "replica": 3.6},
        }

    def _describe(self, model_id: str | None) -> dict[str, Any]:
        return {
            "model_id": model_id or "yolo26n",
            "model": "yolo26n.pt",
            "task": "detect",
            "names": ["person", "bicycle"],
            "imgsz": 640,
            "device": "cpu",
            "versions": {},
        }

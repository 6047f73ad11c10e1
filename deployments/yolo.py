"""Ultralytics, Ray-free: load a registry model, warm it up, run it, return plain arrays.

Only model replicas import this module (and so torch); the ingress never does.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np

from deployments import onnx_backend, openvino_backend
from shared.registry import ModelSpec
from shared.results import Prediction
from shared.settings import apply_ultralytics_env

BACKENDS = (*onnx_backend.BACKENDS, "openvino")
_EXPORTED = {"onnx": onnx_backend, "openvino": openvino_backend}  # backends run from an export


def _ensure_offline_env() -> None:
    # Ultralytics reads these at import time; keep it off the network and off ~/.config.
    apply_ultralytics_env()


def library_versions() -> dict[str, str]:
    return {
        "ultralytics": version("ultralytics"),
        "torch": version("torch").split("+")[0],
        "torchvision": version("torchvision").split("+")[0],
        "python": platform.python_version(),
    }


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # ultralytics.YOLO
    device: str
    half: bool
    names: list[str]
    load_seconds: float
    default_imgsz: int = 640
    predict_kwargs: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"  # "torch" | "onnx" | "openvino" (deployments/*_backend.py)

    def run(
        self, images: list[np.ndarray], conf: float, iou: float, imgsz: int
    ) -> list[Prediction]:
        """Infer on RGB arrays (any sizes). Returns one Prediction per image, same order."""
        import cv2
        import torch

        # Ultralytics treats numpy input as OpenCV-style BGR. cvtColor makes the BGR copy in one
        # vectorised pass: ~0.2 ms for 1 MP, against ~4 ms for numpy's strided [..., ::-1] copy.
        bgr = [cv2.cvtColor(image, cv2.COLOR_RGB2BGR) for image in images]
        with torch.inference_mode():
            results = self.model.predict(
                bgr, conf=conf, iou=iou, imgsz=imgsz, verbose=False, **self.predict_kwargs
            )
        return [to_prediction(r, self.spec.task, self.names) for r in results]


def to_prediction(result: Any, task: str, names: list[str]) -> Prediction:
    """One Ultralytics `Results` -> a Prediction of numpy arrays in the input image's pixels."""
    speed = {
        k: float(result.speed.get(k) or 0.0) for k in ("preprocess", "inference", "postprocess")
    }
    if task == "classify":
        probs = result.probs
        top = [(int(c), float(p)) for c, p in zip(probs.top5, probs.top5conf.tolist(), strict=True)]
        return Prediction(task=task, names=names, top5=top, speed=speed)
    if task == "obb":
        obb = result.obb
        return Prediction(
            task=task,
            names=names,
            boxes=obb.xyxy.cpu().numpy(),
            confidence=obb.conf.cpu().numpy(),
            classes=obb.cls.cpu().numpy().astype(np.int64),
            obb=obb.xyxyxyxy.cpu().numpy(),
            speed=speed,
        )
    boxes = result.boxes
    prediction = Prediction(
        task=task,
        names=names,
        boxes=boxes.xyxy.cpu().numpy(),
        confidence=boxes.conf.cpu().numpy(),
        classes=boxes.cls.cpu().numpy().astype(np.int64),
        speed=speed,
    )
    if task == "segment":
        prediction["segments"] = (
            [np.asarray(p, dtype=np.float32) for p in result.masks.xy] if result.masks else []
        )
    if task == "pose":
        prediction["keypoints"] = (
            result.keypoints.data.cpu().numpy()
            if result.keypoints is not None
            else np.zeros((0, 17, 3), np.float32)
        )
    return prediction


def load_model(
    spec: ModelSpec,
    *,
    device: str = "cpu",
    warmup: bool = True,
    backend: str = "torch",
    threads: int | None = None,
) -> LoadedModel:
    """Load weights from the registry path (never a download), and warm up once.

    `backend="onnx"` runs the same weights through ONNX Runtime, `backend="openvino"` through
    OpenVINO (each exported once, cached beside them) on CPU; on a GPU either means torch, which
    is what runs FP16 there. `threads` caps the exported backend's pool (torch's is set with
    `set_torch_threads`).
    """
    _ensure_offline_env()
    if not spec.path.is_file():
        # YOLO() would try to download a missing file, even by absolute path.
        raise FileNotFoundError(
            f"weights for {spec.id!r} not found at {spec.path}; run `python -m shared.weights`"
        )
    from ultralytics import YOLO

    started = time.perf_counter()
    half = device.startswith("cuda")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; one of {BACKENDS}")
    if backend in _EXPORTED and device != "cpu":
        backend = "torch"
    exporter = _EXPORTED.get(backend)
    exported = exporter.cached_export(spec) if exporter else None
    model = YOLO(str(exported or spec.path), task=spec.task)
    names_map = model.names
    names = [names_map[i] for i in range(len(names_map))]
    loaded = LoadedModel(
        spec=spec,
        model=model,
        device=device,
        half=half,
        names=names,
        load_seconds=0.0,
        default_imgsz=spec.imgsz or 640,
        predict_kwargs={"device": device, **(_fp16_kwargs() if half else {})},
        backend=backend,
    )
    # Exported: the first predict builds the session (compiled model) that `threads` replaces.
    if warmup or exported:
        blank = np.zeros((loaded.default_imgsz, loaded.default_imgsz, 3), np.uint8)
        loaded.run([blank], conf=0.25, iou=0.7, imgsz=loaded.default_imgsz)
    # OpenVINO is always recompiled: Ultralytics' own compilation runs BF16 on AMX CPUs.
    if exporter and exported and (threads or backend == "openvino"):
        exporter.limit_threads(model, exported, threads or 0)
        loaded.run([blank], conf=0.25, iou=0.7, imgsz=loaded.default_imgsz)
    loaded.load_seconds = time.perf_counter() - started
    return loaded


def _fp16_kwargs() -> dict[str, Any]:
    """FP16 is `quantize=16` in current Ultralytics; `half=True` logs a deprecation warning on
    every predict call there (a log line per request), but is all that older 8.4 releases know.
    On CPU neither is passed: Ultralytics computes in FP32 there anyway."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


def set_torch_threads(threads: int) -> None:
    """Ultralytics' first predict lowers torch's thread count; set ours after warm-up."""
    import torch

    torch.set_num_threads(max(1, threads))

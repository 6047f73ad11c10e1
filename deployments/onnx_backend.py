"""ONNX Runtime as a CPU backend: exported once per weights file, cached, run on the replica's CPUs.

On this project's 2-core CPU, ONNX Runtime runs the same YOLO graph markedly faster than PyTorch
eager (bench/README.md has the figures), with the same detections: Ultralytics' own exporter and
its own pre- and post-processing are used, so only the network's executor changes. The export is
dynamic (any input size), so images keep their rectangular letterbox as with PyTorch.

Ray-free, like deployments/yolo.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from shared.digests import sha256_file
from shared.registry import ModelSpec

logger = logging.getLogger("ray.serve")

BACKENDS = ("torch", "onnx")


def cache_path(spec: ModelSpec, directory: Path | None = None) -> Path:
    """Where the export of these exact weights, by this Ultralytics version, is kept.

    Named by content and exporter version, so replaced weights or an upgraded exporter never
    pick up a stale graph.
    """
    digest = sha256_file(spec.path)[:12]
    name = f"{spec.path.stem}.{digest}.ultralytics-{version('ultralytics')}.onnx"
    return (directory or spec.path.parent) / name


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One exporter at a time per file: replicas starting together wait, then reuse it."""
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _cache_dir(spec: ModelSpec) -> Path:
    # Beside the weights; a read-only weights mount (a Kubernetes volume) falls back to /tmp.
    if os.access(spec.path.parent, os.W_OK):
        return spec.path.parent
    fallback = Path(tempfile.gettempdir()) / "yolo-endpoints-onnx"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def cached_export(spec: ModelSpec) -> Path:
    """The ONNX export of `spec`'s weights, made on first use and reused after that."""
    target = cache_path(spec, _cache_dir(spec))
    if target.is_file():
        return target
    with _locked(target):
        if target.is_file():  # another replica exported it while this one waited
            return target
        from ultralytics import YOLO

        # The exporter writes beside its input: export a private copy, then move the result in
        # whole, so no reader ever sees half a file.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
            source = Path(tmp) / spec.path.name
            shutil.copyfile(spec.path, source)
            exported = YOLO(str(source), task=spec.task).export(
                format="onnx",
                dynamic=True,
                simplify=True,
                imgsz=spec.imgsz or 640,
                device="cpu",
                verbose=False,
            )
            os.replace(exported, target)
        logger.info("exported %s to %s", spec.id, target)
    return target


def limit_threads(model: Any, path: Path, threads: int, spin: bool = False) -> bool:
    """Give the loaded ONNX model a session that uses `threads` cores and does not spin.

    ONNX Runtime otherwise sizes its pool to every physical core of the machine (not the
    replica's share) and busy-waits between operators, taking CPU from the ingress on a small
    machine. Ultralytics builds the session itself, so it is rebuilt here with those options;
    False when the loaded model is not laid out as expected (the default session is kept).
    """
    import onnxruntime

    backend = getattr(getattr(getattr(model, "predictor", None), "model", None), "backend", None)
    session = getattr(backend, "session", None)
    if session is None:
        return False
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    backend.session = onnxruntime.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )
    return True

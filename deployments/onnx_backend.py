"""ONNX Runtime as a CPU backend: exported once per weights file, cached, run on the replica's CPUs.

On this project's 2-core CPU, ONNX Runtime runs the same YOLO graph markedly faster than PyTorch
eager (bench/README.md has the figures), with the same detections: Ultralytics' own exporter and
its own pre- and post-processing are used, so only the network's executor changes. The export is
dynamic (any input size), so images keep their rectangular letterbox as with PyTorch.

Ray-free, like deployments/yolo.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deployments import exports
from shared.registry import ModelSpec

BACKENDS = ("torch", "onnx")


def cache_path(spec: ModelSpec, directory: Path | None = None) -> Path:
    """Where the export of these exact weights, by this Ultralytics version, is kept."""
    return (directory or spec.path.parent) / exports.export_name(spec, ".onnx")


def cached_export(spec: ModelSpec) -> Path:
    """The ONNX export of `spec`'s weights, made on first use and reused after that."""
    target = cache_path(spec, exports.cache_dir(spec, "yolo-endpoints-onnx"))
    return exports.cached_export(
        spec, target, Path.is_file, format="onnx", dynamic=True, simplify=True
    )


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

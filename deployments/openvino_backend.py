"""OpenVINO as a CPU backend: exported once per weights file, cached, run on the replica's CPUs.

Shaped like deployments/onnx_backend.py: Ultralytics' own exporter and its own pre- and
post-processing, so only the network's executor changes. The export is dynamic (any input size):
a static OpenVINO export makes Ultralytics letterbox every image to a fixed square, so imgsz 320
would silently run at 640 and rectangular letterboxing would be lost.

Ultralytics compiles the model with only `PERFORMANCE_HINT=LATENCY`, which on CPU means one
stream using every physical core of the machine (not the replica's share), threads pinned to
cores, and, on CPUs with AMX/AVX512-BF16 (this project's Xeon among them), bfloat16 inference
precision, which moves boxes and confidences away from PyTorch's. `limit_threads` recompiles it
with an explicit thread count, no pinning, and FP32 unless asked otherwise.

Ray-free, like deployments/yolo.py.
"""

from __future__ import annotations

from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from deployments import exports
from shared.registry import ModelSpec

# Ultralytics recognises an OpenVINO model by this ending of its directory's name.
SUFFIX = "_openvino_model"


def cache_path(spec: ModelSpec, directory: Path | None = None) -> Path:
    """Where the export of these exact weights, by these Ultralytics and OpenVINO versions, is
    kept: a directory (the IR's .xml and .bin plus Ultralytics' metadata.yaml)."""
    name = exports.export_name(spec, f".openvino-{version('openvino')}{SUFFIX}")
    return (directory or spec.path.parent) / name


def _complete(target: Path) -> bool:
    return target.is_dir() and any(target.glob("*.xml")) and (target / "metadata.yaml").is_file()


def cached_export(spec: ModelSpec) -> Path:
    """The OpenVINO export (a directory) of `spec`'s weights, made on first use, reused after.

    Dynamic (any input size): a static export makes Ultralytics letterbox every image to a
    fixed square, so imgsz 320 would silently run at 640."""
    target = cache_path(spec, exports.cache_dir(spec, "yolo-endpoints-openvino"))
    return exports.cached_export(spec, target, _complete, format="openvino", dynamic=True)


def compile_config(threads: int, precision: str = "f32") -> dict[str, Any]:
    """CPU plugin settings for a replica that owns `threads` cores (0: the plugin's own count)."""
    return {
        "PERFORMANCE_HINT": "LATENCY",  # what Ultralytics asks for: one request at a time
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": max(0, threads),
        # Pinning puts every one-thread replica on the same first core; leave placement to Linux.
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": precision,  # "f32": PyTorch's detections; "bf16" on AMX
    }


def limit_threads(model: Any, path: Path, threads: int, precision: str = "f32") -> bool:
    """Recompile the loaded OpenVINO model for `threads` cores, unpinned, at `precision`.

    Ultralytics compiles the model itself on the first predict; this replaces its compiled model
    (and the compile function it uses to recompile per shape on AMX INT8 models) with one built
    from `compile_config`. False when the loaded model is not laid out as expected (the default
    compilation is kept).
    """
    backend = getattr(getattr(getattr(model, "predictor", None), "model", None), "backend", None)
    ov = getattr(backend, "ov", None)
    if ov is None or getattr(backend, "ov_compiled_model", None) is None:
        return False
    core = ov.Core()
    xml = path if path.is_file() else next(path.glob("*.xml"))
    backend.compile_model = partial(
        core.compile_model, device_name="CPU", config=compile_config(threads, precision)
    )
    backend.ov_compiled_model = backend.compile_model(core.read_model(xml, xml.with_suffix(".bin")))
    backend.prefetch = False  # no loader thread beside the one inference thread
    return True


def compiled_settings(model: Any) -> dict[str, Any]:
    """What the compiled model actually runs with (threads, streams, precision, pinning)."""
    compiled = model.predictor.model.backend.ov_compiled_model
    keys = (
        "INFERENCE_NUM_THREADS",
        "NUM_STREAMS",
        "INFERENCE_PRECISION_HINT",
        "ENABLE_CPU_PINNING",
    )
    return {k: str(compiled.get_property(k)) for k in keys}

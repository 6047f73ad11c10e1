"""Exports of a model's weights for another runtime, made once and cached beside the weights.

One exporter at a time per export (replicas starting together wait, then reuse it), never a
half-written export visible to a reader, and names that change with the weights' content and
the exporter's version, so a replaced file or an upgraded Ultralytics never loads a stale graph.
deployments/onnx_backend.py and openvino_backend.py say what each export is. Ray-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from shared.digests import sha256_file
from shared.registry import ModelSpec

logger = logging.getLogger("ray.serve")


def export_name(spec: ModelSpec, ending: str) -> str:
    """`{stem}.{content digest}.ultralytics-{version}{ending}` for these exact weights."""
    digest = sha256_file(spec.path)[:12]
    return f"{spec.path.stem}.{digest}.ultralytics-{version('ultralytics')}{ending}"


def cache_dir(spec: ModelSpec, fallback: str) -> Path:
    """Beside the weights; a read-only weights mount (a Kubernetes volume) falls back to /tmp."""
    if os.access(spec.path.parent, os.W_OK):
        return spec.path.parent
    directory = Path(tempfile.gettempdir()) / fallback
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_export(
    spec: ModelSpec, target: Path, complete: Callable[[Path], bool], **export_args: Any
) -> Path:
    """`target`, exported from `spec`'s weights by Ultralytics (`export_args`) on first use."""
    if complete(target):
        return target
    with _locked(target):
        if complete(target):  # another replica exported it while this one waited
            return target
        from ultralytics import YOLO

        # The exporter writes beside its input: export a private copy, then move the result
        # into place in one rename, so no reader ever sees half an export.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
            source = Path(tmp) / spec.path.name
            shutil.copyfile(spec.path, source)
            exported = YOLO(str(source), task=spec.task).export(
                imgsz=spec.imgsz or 640, device="cpu", verbose=False, **export_args
            )
            if target.is_dir():  # an incomplete leftover (a crash mid-rename cannot make one)
                shutil.rmtree(target)
            os.replace(Path(exported), target)
        logger.info("exported %s to %s", spec.id, target)
    return target

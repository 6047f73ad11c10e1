"""`--annotated DIR`: each image's results drawn locally into DIR/<relative path>.jpg, since
the predict API answers JSON only.

The drawing code (shared.annotate, shared.images) is passed in as an Annotator rather than
imported here: the client runs without it, and decoding pulls in OpenCV and Pillow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.batch_inputs import Input
from shared.errors import ApiError


@dataclass(frozen=True)
class Annotator:
    """Draws each image's results locally, into folder/<relative path>.jpg."""

    folder: Path
    decode: Callable[[bytes], Any]  # shared.images.decode_image
    annotate: Callable[..., Any]  # shared.annotate.annotate(rgb, results, task)
    encode: Callable[..., bytes]  # shared.annotate.encode(rgb, media_type)


def task_of(metadata: Any, results: Sequence[Any]) -> str:
    """The response's metadata.task, else what the results' keys say."""
    task = metadata.get("task") if isinstance(metadata, Mapping) else None
    if isinstance(task, str) and task:
        return task
    keys = {k for r in results if isinstance(r, Mapping) for k in r}
    for key, name in (("segments", "segment"), ("keypoints", "pose"), ("obb", "obb")):
        if key in keys:
            return name
    return "classify" if results and "box" not in keys else "detect"


def annotated_path(folder: Path, item: Input) -> Path:
    # The name kept whole (bus.jpg -> bus.jpg.jpg) so that a.png and a.jpg never collide.
    return folder / f"{item.relative}.jpg"


def draw(annotator: Annotator, item: Input, body: Mapping[str, Any], entry: Mapping) -> str | None:
    """Write the annotated image; the error message if that failed."""
    results = entry.get("results") or []
    try:
        with open(item.path, "rb") as file:
            rgb = annotator.decode(file.read()).array
        drawn = annotator.annotate(rgb, results, task_of(body.get("metadata"), results))
        path = annotated_path(annotator.folder, item)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(annotator.encode(drawn, "image/jpeg"))
    except ApiError as exc:
        return f"cannot draw: {exc.message}"
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable file, odd results
        return f"cannot draw: {exc!r}"
    return None

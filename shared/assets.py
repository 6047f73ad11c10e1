"""Example images that ship inside the ultralytics package (bus.jpg, zidane.jpg)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = ("bus.jpg", "zidane.jpg")


def assets_dir() -> Path:
    # Located without importing ultralytics, which the ingress must not load.
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the ultralytics package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


def example_image(name: str) -> Path:
    if name not in EXAMPLES:
        raise KeyError(name)
    return assets_dir() / name

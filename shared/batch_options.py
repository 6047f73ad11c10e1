"""The command line of `yolo-endpoints predict`, checked and turned into Options before
anything is sent: a mistake here is a UsageError (exit status 2), never a failed file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from shared.batch_annotated import Annotator
from shared.batch_inputs import Input, find_inputs, missing_paths

KEY_ENV = "YOLO_ENDPOINTS_KEY"


class UsageError(Exception):
    """A mistake in the command line, found before anything is sent (exit status 2)."""


@dataclass(frozen=True)
class Target:
    """Where each file goes."""

    url: str  # the predict URL itself
    shared: bool  # the shared model route: rate-limited per key, and images only


@dataclass(frozen=True)
class Options:
    target: Target
    key: str = field(repr=False)  # never in a repr, a traceback or any output
    paths: tuple[str, ...]
    fields: Mapping[str, str]  # conf, iou, imgsz: sent only when given
    vid_stride: int | None
    retries: int  # retries after the first try, for 5xx and connection errors
    timeout_s: float
    concurrency: int
    out: str  # a file, or "-" for stdout
    annotator: Annotator | None
    progress: bool

    def inputs(self, on_error: Callable[[str, OSError], None] | None = None) -> Iterator[Input]:
        """The walk of `paths`, never into the --annotated folder."""
        exclude = (str(self.annotator.folder),) if self.annotator else ()
        if on_error is None:
            return find_inputs(self.paths, exclude=exclude)
        return find_inputs(self.paths, on_error, exclude)


def resolve_target(url: str | None, model: str | None, endpoint: str | None) -> Target:
    """--model -> the shared route; --endpoint NAME -> this server's dedicated endpoint, or,
    when NAME is an http(s) URL, that URL (a Platform endpoint), with /predict added."""
    if endpoint and urlsplit(endpoint).scheme in ("http", "https"):
        base = endpoint.rstrip("/")
        return Target(url=base if base.endswith("/predict") else f"{base}/predict", shared=False)
    if not url:
        raise UsageError("--url is required unless --endpoint is a URL")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise UsageError(f"--url must be an http(s) URL, not {url!r}")
    base = url.rstrip("/")
    if model:
        # Platform model IDs may have slashes (owner/project/model); anything else is escaped.
        return Target(url=f"{base}/api/models/{quote(model, safe='/')}/predict", shared=True)
    assert endpoint
    return Target(url=f"{base}/endpoints/{quote(endpoint, safe='')}/predict", shared=False)


def load_annotator(folder: str) -> Annotator:
    """Imported only for --annotated: the client runs without them (shared.annotate may not be
    installed), and decoding pulls in OpenCV and Pillow."""
    try:
        from shared import annotate
        from shared.images import decode_image
    except ImportError as exc:
        raise UsageError(f"--annotated is not available here: {exc}") from exc
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--annotated {folder}: {exc.strerror or exc}") from exc
    return Annotator(
        folder=path, decode=decode_image, annotate=annotate.annotate, encode=annotate.encode
    )


def options_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Options:
    key = args.key or environ.get(KEY_ENV, "")
    if not key:
        raise UsageError(f"an API key is required: --key KEY or ${KEY_ENV}")
    target = resolve_target(args.url, args.model, args.endpoint)
    missing = missing_paths(args.paths)
    if missing:
        raise UsageError("no such file or folder: " + ", ".join(missing))
    for name in ("concurrency", "vid_stride"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    # Only what no server accepts: a server's own ranges come back as a 400 naming the field.
    for name in ("conf", "iou"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            raise UsageError(f"--{name} must be between 0 and 1")
    if args.imgsz is not None and args.imgsz < 1:
        raise UsageError("--imgsz must be positive")
    if args.retries < 0:
        raise UsageError("--retries must be 0 or more")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    fields = {n: str(v) for n in ("conf", "iou", "imgsz") if (v := getattr(args, n)) is not None}
    return Options(
        target=target,
        key=key,
        paths=tuple(args.paths),
        fields=fields,
        vid_stride=args.vid_stride,
        retries=args.retries,
        timeout_s=args.timeout,
        concurrency=args.concurrency,
        out=args.out,
        annotator=load_annotator(args.annotated) if args.annotated else None,
        progress=args.progress or sys.stderr.isatty(),
    )

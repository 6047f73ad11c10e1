"""The files `yolo-endpoints predict PATH...` sends: named files, and folders walked for images
and videos by extension.

A generator, so 100k files never sit in memory at once; the client walks twice (once to count
for the progress bar and to say up front what resume skips, once to send), and the walk is
deterministic: each directory's entries sorted by name, depth first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePath

# The formats the API decodes (shared/images.py) and the video containers dedicated endpoints
# demux; matched case-insensitively against a folder's file names.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".avif", ".heic", ".heif", ".jp2", ".tif", ".tiff"}
    | {".bmp", ".dng", ".mpo"}
)
VIDEO_SUFFIXES = frozenset(
    {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".webm"}
    | {".wmv"}
)


@dataclass(frozen=True)
class Input:
    path: str  # as the user would write it: the argument, joined with the walk's names
    relative: PurePath  # below the folder argument (a named file: its name), for --annotated
    is_video: bool


def is_video(name: str) -> bool:
    return PurePath(name).suffix.lower() in VIDEO_SUFFIXES


def is_media(name: str) -> bool:
    suffix = PurePath(name).suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES


def missing_paths(paths: Sequence[str]) -> list[str]:
    """The arguments that name nothing, checked before anything is sent."""
    return [p for p in paths if not os.path.exists(p)]


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(
    top: str,
    parts: tuple[str, ...],
    on_error: Callable[[str, OSError], None],
    exclude: frozenset[str],
) -> Iterator[Input]:
    directory = os.path.join(top, *parts)
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        on_error(directory, exc)
        return
    for entry in entries:
        if _hidden(entry.name):
            continue
        # Directory symlinks are not followed (a link to a parent would walk forever); file
        # symlinks are, as the file they name is what the user keeps there.
        if entry.is_dir(follow_symlinks=False):
            if not exclude or os.path.realpath(entry.path) not in exclude:
                yield from _walk(top, (*parts, entry.name), on_error, exclude)
        elif entry.is_file() and is_media(entry.name):
            yield Input(
                path=os.path.join(directory, entry.name),
                relative=PurePath(*parts, entry.name),
                is_video=is_video(entry.name),
            )


def _ignore(_path: str, _exc: OSError) -> None:
    pass


def find_inputs(
    paths: Sequence[str],
    on_error: Callable[[str, OSError], None] = _ignore,
    exclude: Sequence[str] = (),
) -> Iterator[Input]:
    """Every input under `paths`, in order. A named file is sent whatever its extension (the
    server identifies images by content and says so if it cannot); folders contribute only
    images and videos by extension, skipping hidden files and folders, and the folders in
    `exclude` (the --annotated output, whose pictures are not inputs for the next run).
    `on_error` hears of folders that cannot be listed, which are skipped."""
    skip = frozenset(os.path.realpath(p) for p in exclude)
    for arg in paths:
        if os.path.isdir(arg):
            yield from _walk(arg, (), on_error, skip)
        else:
            name = PurePath(arg).name
            yield Input(path=arg, relative=PurePath(name), is_video=is_video(name))

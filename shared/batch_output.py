"""The JSONL that `yolo-endpoints predict` writes, and what it says at the end: each file's
lines, the paths an earlier run already did (which is how a run resumes), the counts, and the
summary on stderr.

Only the main thread writes, so lines never interleave.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

from shared.batch_http import FATAL
from shared.batch_inputs import Input

MAX_LISTED_FAILURES = 10


@dataclass
class Outcome:
    """What became of one file: its images[] entries, or why there are none."""

    input: Input
    images: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    status: int | None = None
    annotation_error: str | None = None  # the prediction is kept; only its drawing failed

    @property
    def ok(self) -> bool:
        return self.error is None

    def lines(self) -> list[dict[str, Any]]:
        if not self.ok:
            return [{"path": self.input.path, "error": self.error, "status": self.status}]
        return [self._line(entry) for entry in self.images]

    def _line(self, entry: dict[str, Any]) -> dict[str, Any]:
        line: dict[str, Any] = {"path": self.input.path}
        if self.input.is_video:  # each processed frame: where it is in the source
            for name in ("frame", "timestamp"):
                if name in entry:
                    line[name] = entry[name]
        line["image"] = entry
        return line


@dataclass
class Tally:
    files_done: int = 0
    images_done: int = 0
    skipped: int = 0
    failed: int = 0
    annotation_failed: int = 0
    failures: list[str] = field(default_factory=list)  # the first few, for stderr
    videos_done: int = 0
    stopped: str | None = None  # why the run ended before every file was sent
    interrupted: bool = False  # Ctrl-C

    def fail(self, path: str, error: str) -> None:
        if len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append(f"{path}: {error}")

    def summary(self, elapsed_s: float) -> str:
        rate = self.images_done / elapsed_s if elapsed_s > 0 else 0.0
        text = (
            f"{self.files_done} done ({self.images_done} images), {self.skipped} skipped, "
            f"{self.failed} failed in {elapsed_s:.1f} s, {rate:.1f} images/s"
        )
        if self.annotation_failed:
            text += f"; {self.annotation_failed} annotated images not written"
        return text

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.annotation_failed or self.stopped else 0


def done_paths(out: str) -> set[str]:
    """Paths with a success line in an earlier run's output (failed ones are sent again). A
    line cut short by an interrupted run is ignored. Raises OSError if `out` cannot be read."""
    done: set[str] = set()
    if out == "-" or not os.path.exists(out):
        return done
    with open(out, encoding="utf-8", errors="replace") as file:
        for text in file:
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("path"), str) and "error" not in line:
                done.add(line["path"])
    return done


def open_output(out: str) -> TextIO:
    """`out` for appending, or stdout for "-"; the caller closes it. Raises OSError if it
    cannot be opened."""
    if out == "-":
        return sys.stdout
    # errors="replace": a file not written here may end inside a multibyte character, which
    # the one-character read below would otherwise fail to decode. What is written is ASCII.
    stream = open(out, "a+", encoding="utf-8", errors="replace")  # noqa: SIM115
    # An interrupted run may have left half a line: start on a fresh one.
    if stream.tell() > 0:
        stream.seek(stream.tell() - 1)
        if stream.read(1) != "\n":
            stream.write("\n")
    return stream


def write_lines(stream: TextIO, outcome: Outcome) -> None:
    # One write and one flush per file: an interrupted run keeps every line it reported.
    stream.write("".join(json.dumps(line) + "\n" for line in outcome.lines()))
    stream.flush()


def record(outcome: Outcome, stream: TextIO, bar: tqdm, tally: Tally) -> None:
    """Write one file's lines and count them; a FATAL answer sets `tally.stopped`."""
    write_lines(stream, outcome)
    if outcome.ok:
        tally.files_done += 1
        tally.images_done += len(outcome.images)
        if outcome.input.is_video:  # counted as one image until its frames were known
            tally.videos_done += 1
            bar.total += len(outcome.images) - 1
            bar.refresh()
        bar.update(len(outcome.images))
    else:
        tally.failed += 1
        tally.fail(outcome.input.path, outcome.error or "")
        bar.update(1)
    if outcome.annotation_error:
        tally.annotation_failed += 1
        tally.fail(outcome.input.path, outcome.annotation_error)
    if outcome.status in FATAL:
        tally.stopped = f"stopped: every other file would get the same answer ({outcome.error})"


def report(tally: Tally, elapsed_s: float, annotated: bool) -> None:
    """The end of a run, on stderr: the first failures, why it stopped, and the summary."""
    log = sys.stderr
    if tally.failures:
        more = tally.failed + tally.annotation_failed - len(tally.failures)
        print("failures:", file=log)
        for line in tally.failures:
            print(f"  {line}", file=log)
        if more > 0:
            print(f"  ... and {more} more", file=log)
    if tally.stopped:
        print(tally.stopped, file=log)
    if tally.interrupted:
        print("interrupted: the same command resumes where this run stopped", file=log)
    if annotated and tally.videos_done:
        videos = f"{tally.videos_done} video" + ("s" if tally.videos_done != 1 else "")
        print(f"--annotated draws images only: no pictures of {videos}", file=log)
    print(tally.summary(elapsed_s), file=log)

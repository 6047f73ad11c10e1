"""`yolo-endpoints predict PATH...`: send many images and videos to a predict route, one file a
request, and keep every answer as a line of JSON.

Threads, each with its own HTTP session: a producer walks the inputs into a bounded queue (so
100k files never sit in memory), N workers send them, and the main thread alone writes the
output (no interleaved lines) and draws the progress bar. What the threads share is passed to
them explicitly: the queues, a stop event, and a Throttle, the "not before" time a 429 sets so
that every worker waits out the key's limit instead of spending it again.

The command line is checked in shared.batch_options, a request and its retries are
shared.batch_http, the output and the end-of-run report shared.batch_output, and --annotated's
drawing shared.batch_annotated.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import requests
from tqdm import tqdm

from shared.batch_annotated import draw
from shared.batch_http import Throttle, Upload, send
from shared.batch_inputs import Input
from shared.batch_options import Options, UsageError, options_from_args
from shared.batch_output import Outcome, Tally, done_paths, open_output, record, report

POLL_S = 0.2  # how often blocked threads look at the stop event
VIDEO_ON_SHARED = (
    "videos need a dedicated endpoint (--endpoint): the shared predict route takes images only"
)

T = TypeVar("T")


def at_out(action: Callable[[str], T], out: str) -> T:
    """`action(out)`, with an --out that cannot be read or opened a usage error: an earlier
    run's output is read before it is opened, so either may be the first to meet it."""
    try:
        return action(out)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from exc


# --- one file ----------------------------------------------------------------------------


def predict_file(
    session: requests.Session,
    options: Options,
    throttle: Throttle,
    stop: threading.Event,
    item: Input,
) -> Outcome | None:
    """Send one file until it succeeds, fails for good, or the run stops (None: not recorded,
    so a resumed run sends it again)."""
    if item.is_video and options.target.shared:
        return Outcome(item, error=VIDEO_ON_SHARED)
    fields = dict(options.fields)
    if item.is_video and options.vid_stride is not None:
        fields["vid_stride"] = str(options.vid_stride)
    upload = Upload(
        url=options.target.url,
        key=options.key,
        fields=fields,
        path=item.path,
        timeout_s=options.timeout_s,
    )
    reply = send(session, upload, options.retries, throttle, stop)
    if reply is None:
        return None
    if reply.ok:
        return success(options, item, reply.body)
    return Outcome(item, error=reply.error, status=reply.status)


def _images(body: Any) -> list[dict[str, Any]] | None:
    images = body.get("images") if isinstance(body, Mapping) else None
    if not isinstance(images, list) or not all(isinstance(e, dict) for e in images):
        return None
    return images


def success(options: Options, item: Input, body: Any) -> Outcome:
    images = _images(body)
    if not images:
        return Outcome(item, error="the response has no images[]", status=200)
    outcome = Outcome(item, images=images)
    if options.annotator and not item.is_video:
        outcome.annotation_error = draw(options.annotator, item, body, images[0])
    return outcome


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the first walk found: the files to send and what fails before any request."""

    todo: int
    skipped: int
    unreadable: list[Outcome]


def plan(options: Options, done: set[str]) -> Plan:
    unreadable: list[Outcome] = []

    def on_error(path: str, exc: OSError) -> None:
        item = Input(path=path, relative=Path(path), is_video=False)
        unreadable.append(Outcome(item, error=f"cannot list folder: {exc.strerror or exc}"))

    todo = skipped = 0
    seen: set[str] = set()
    for item in options.inputs(on_error):
        if item.path in done:
            skipped += 1
        elif item.path not in seen:  # a file named twice is sent once
            seen.add(item.path)
            todo += 1
    return Plan(todo=todo, skipped=skipped, unreadable=unreadable)


def _put(jobs: queue.Queue[Input | None], item: Input | None, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            jobs.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def produce(
    options: Options,
    done: set[str],
    jobs: queue.Queue[Input | None],
    stop: threading.Event,
) -> None:
    """Queue every file not done yet, then one None per worker (even if the walk broke, so
    that no worker waits forever)."""
    seen: set[str] = set()
    try:
        for item in options.inputs():
            if item.path in done or item.path in seen:
                continue
            seen.add(item.path)
            if not _put(jobs, item, stop):
                return
    finally:
        for _ in range(options.concurrency):
            if not _put(jobs, None, stop):
                break


def work(
    options: Options,
    throttle: Throttle,
    stop: threading.Event,
    jobs: queue.Queue[Input | None],
    outcomes: queue.Queue[Outcome | None],
) -> None:
    """Send queued files until the None; then say so with a None of its own."""
    session = requests.Session()
    try:
        while not stop.is_set():
            try:
                item = jobs.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is None:
                break
            try:
                outcome = predict_file(session, options, throttle, stop, item)
            except Exception as exc:  # a bug here must cost one file, not the worker's queue
                outcome = Outcome(item, error=f"client error: {exc!r}")
            if outcome is not None:
                outcomes.put(outcome)
    finally:
        session.close()
        outcomes.put(None)


def run(
    options: Options,
    done: set[str],
    found: Plan,
    stream: TextIO,
    tally: Tally,
    stop: threading.Event,
) -> None:
    """Send and write until every file is done or the run is stopped."""
    bar = tqdm(
        total=found.todo,
        unit="img",
        file=sys.stderr,
        disable=not options.progress,
        dynamic_ncols=True,
    )
    for outcome in found.unreadable:
        record(outcome, stream, bar, tally)
    jobs: queue.Queue[Input | None] = queue.Queue(maxsize=2 * options.concurrency)
    outcomes: queue.Queue[Outcome | None] = queue.Queue()
    throttle = Throttle()
    producer = threading.Thread(target=produce, args=(options, done, jobs, stop))
    workers = [
        threading.Thread(target=work, args=(options, throttle, stop, jobs, outcomes))
        for _ in range(options.concurrency)
    ]
    for thread in (producer, *workers):
        # Daemons: after a Ctrl-C the process ends without waiting for requests in flight.
        thread.daemon = True
        thread.start()
    try:
        finished = 0
        while finished < options.concurrency:
            try:
                outcome = outcomes.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if outcome is None:
                finished += 1
                continue
            record(outcome, stream, bar, tally)
            if tally.stopped:
                stop.set()  # files in flight still finish; unsent ones wait for a resume
    finally:
        bar.close()


def main(
    args: argparse.Namespace,
    fail: Callable[[str], NoReturn],
    environ: Mapping[str, str] = os.environ,
) -> int:
    """`yolo-endpoints predict`; `fail` is the subcommand's parser.error (exit status 2)."""
    started = time.monotonic()
    tally = Tally()
    stop = threading.Event()  # every thread watches it: set by a fatal answer or a Ctrl-C
    try:
        options = options_from_args(args, environ)
        done = at_out(done_paths, options.out)
        found = plan(options, done)
        if found.todo == 0 and found.skipped == 0 and not found.unreadable:
            raise UsageError("found no images or videos in " + " ".join(options.paths))
        stream = at_out(open_output, options.out)
    except UsageError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return 130
    tally.skipped = found.skipped
    if found.skipped:
        print(f"skipping {found.skipped} files already done in {options.out}", file=sys.stderr)
    try:
        run(options, done, found, stream, tally, stop)
    except KeyboardInterrupt:
        stop.set()
        tally.interrupted = True
    finally:
        if stream is not sys.stdout:
            stream.close()
    report(tally, time.monotonic() - started, annotated=options.annotator is not None)
    return 130 if tally.interrupted else tally.exit_code

"""`yolo-endpoints predict PATH...`: send many images and videos to a predict route, one file a
request, and keep every answer as a line of JSON.

Threads, each with its own HTTP session: a producer walks the inputs into a bounded queue (so
100k files never sit in memory), N workers send them, and the main thread alone writes the
output (no interleaved lines) and draws the progress bar. What the threads share is passed to
them explicitly: the queues, a stop event, and a Throttle, the "not before" time a 429 sets so
that every worker waits out the key's limit instead of spending it again.

Works against this server and against the Ultralytics Platform: it needs nothing but the
predict contract (multipart `file`, `Authorization: Bearer`, `{"images": [...]}` back), and
draws --annotated images itself, as the API returns JSON only.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import mimetypes
import os
import queue
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO
from urllib.parse import quote, urlsplit

import requests
from tqdm import tqdm
from urllib3.fields import format_multipart_header_param

from shared.batch_inputs import Input, find_inputs, missing_paths
from shared.errors import ApiError

KEY_ENV = "YOLO_ENDPOINTS_KEY"
RETRYABLE = frozenset({500, 502, 503, 504})  # the server may answer the same request next time
# No answer at all: refused, reset, timed out, cut off mid-response.
TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# Statuses that every later file would get too (a wrong key, a key not allowed this model, no
# such model or endpoint): the run stops instead of recording the same error for every file.
FATAL = frozenset({401, 403, 404})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RATE_LIMITED_DEFAULT_S = 1.0  # a 429 without a readable Retry-After
# A 429 is the server saying when to come back, not a failure, so it does not use up --retries;
# this only ends a file that a server answers 429 forever.
MAX_RATE_LIMITED = 100
CONNECT_TIMEOUT_S = 10.0
POLL_S = 0.2  # how often blocked threads look at the stop event
CHUNK_BYTES = 1 << 16
MAX_LISTED_FAILURES = 10
VIDEO_ON_SHARED = (
    "videos need a dedicated endpoint (--endpoint): the shared predict route takes images only"
)


class UsageError(Exception):
    """A mistake in the command line, found before anything is sent (exit status 2)."""


@dataclass(frozen=True)
class Target:
    """Where each file goes."""

    url: str  # the predict URL itself
    shared: bool  # the shared model route: rate-limited per key, and images only


@dataclass(frozen=True)
class Annotator:
    """Draws each image's results locally, into folder/<relative path>.jpg."""

    folder: Path
    decode: Callable[[bytes], Any]  # shared.images.decode_image
    annotate: Callable[..., Any]  # shared.annotate.annotate(rgb, results, task)
    encode: Callable[..., bytes]  # shared.annotate.encode(rgb, media_type)


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


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange: the parsed 200 body, or the error and what it says about retrying."""

    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    body: Any = None
    error: str | None = None
    retry_after_s: float | None = None


class Throttle:
    """The "not before" time all workers share: after a 429 nobody sends until it passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_before = 0.0  # time.monotonic()

    def defer(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    def wait(self, stop: threading.Event) -> None:
        # Looped: another worker's 429 may push the time further while this one sleeps.
        while not stop.is_set():
            with self._lock:
                delay = self._not_before - time.monotonic()
            if delay <= 0:
                return
            stop.wait(delay)


# --- the command line -> Options ---------------------------------------------------------


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


# --- one request -------------------------------------------------------------------------


class MultipartBody:
    """multipart/form-data streamed from disk: a video may be far larger than a worker should
    hold in memory, and requests' own `files=` reads the whole file first. Sized up front, so
    it goes with a Content-Length rather than chunked."""

    def __init__(self, fields: Mapping[str, str], path: str, filename: str) -> None:
        self.boundary = secrets.token_hex(16)
        ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        parts = [self._part(f'name="{name}"') + value.encode() for name, value in fields.items()]
        parts.append(
            self._part(
                f'name="file"; {format_multipart_header_param("filename", filename)}',
                f"Content-Type: {ctype}\r\n",
            )
        )
        self._head = b"\r\n".join(parts)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._path = path
        self._size = os.path.getsize(path)

    def _part(self, disposition: str, extra: str = "") -> bytes:
        return (
            f"--{self.boundary}\r\nContent-Disposition: form-data; {disposition}\r\n{extra}\r\n"
        ).encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        with open(self._path, "rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk
        yield self._tail


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def backoff_s(failures: int) -> float:
    """0.5 s doubling per failure, capped at 30 s, with jitter (between half and all of it) so
    that workers failing together do not come back together."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failures - 1))
    return random.uniform(ceiling / 2, ceiling)


def error_message(response: requests.Response) -> str:
    """The API's `{"error": ...}`, or what else the body says."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        for name in ("error", "detail", "message"):
            if isinstance(body.get(name), str):
                return body[name]
    text = response.text.strip()
    reason = f"HTTP {response.status_code} {response.reason or ''}".strip()
    return f"{reason}: {text[:200]}" if text else reason


def post(session: requests.Session, options: Options, item: Input) -> Reply:
    """One try. Raises requests' errors (no answer) and OSError (the file, as it was sent)."""
    fields = dict(options.fields)
    if item.is_video and options.vid_stride is not None:
        fields["vid_stride"] = str(options.vid_stride)
    body = MultipartBody(fields, item.path, os.path.basename(item.path))
    response = session.post(
        options.target.url,
        data=body,
        headers={"Authorization": f"Bearer {options.key}", "Content-Type": body.content_type},
        timeout=(CONNECT_TIMEOUT_S, options.timeout_s),
    )
    with response:
        if response.status_code != 200:
            return Reply(
                status=response.status_code,
                error=error_message(response),
                retry_after_s=retry_after_s(response.headers.get("Retry-After")),
            )
        try:
            return Reply(status=200, body=response.json())
        except ValueError:
            return Reply(status=200, error="the response is not JSON")


def attempt(session: requests.Session, options: Options, item: Input) -> tuple[Reply, bool]:
    """One try, and whether trying again may help."""
    try:
        reply = post(session, options, item)
    except TRANSIENT_ERRORS as exc:
        return Reply(status=None, error=f"connection error: {exc}"), True
    except requests.RequestException as exc:  # e.g. an invalid URL: the same every time
        return Reply(status=None, error=f"request error: {exc}"), False
    except OSError as exc:  # requests' errors are OSErrors too, so this comes after them
        return Reply(status=None, error=f"cannot read the file: {exc.strerror or exc}"), False
    return reply, reply.status in RETRYABLE


def _images(body: Any) -> list[dict[str, Any]] | None:
    images = body.get("images") if isinstance(body, Mapping) else None
    if not isinstance(images, list) or not all(isinstance(e, dict) for e in images):
        return None
    return images


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
    failures = rate_limited = 0
    while True:
        throttle.wait(stop)
        if stop.is_set():
            return None
        reply, retryable = attempt(session, options, item)
        if reply.status == 200 and reply.error is None:
            return success(options, item, reply.body)
        if reply.status == 429 and rate_limited < MAX_RATE_LIMITED:
            rate_limited += 1
            delay = reply.retry_after_s
            throttle.defer(RATE_LIMITED_DEFAULT_S if delay is None else delay)
            continue
        if retryable and failures < options.retries:
            failures += 1
            delay = reply.retry_after_s
            stop.wait(delay if delay is not None else backoff_s(failures))
            continue
        return Outcome(item, error=reply.error, status=reply.status)


def success(options: Options, item: Input, body: Any) -> Outcome:
    images = _images(body)
    if not images:
        return Outcome(item, error="the response has no images[]", status=200)
    outcome = Outcome(item, images=images)
    if options.annotator and not item.is_video:
        outcome.annotation_error = draw(options.annotator, item, body, images[0])
    return outcome


# --- --annotated -------------------------------------------------------------------------


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


# --- resume and output -------------------------------------------------------------------


def done_paths(out: str) -> set[str]:
    """Paths with a success line in an earlier run's output (failed ones are sent again). A
    line cut short by an interrupted run is ignored."""
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
    if out == "-":
        return sys.stdout
    try:
        stream = open(out, "a+", encoding="utf-8")  # noqa: SIM115  (closed by the caller)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from exc
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


# --- the run -----------------------------------------------------------------------------


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
    # The stop event every thread watches: set by a fatal answer or a Ctrl-C.
    stop: threading.Event = field(default_factory=threading.Event)

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


def record(outcome: Outcome, stream: TextIO, bar: tqdm, tally: Tally) -> None:
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


def run(options: Options, done: set[str], found: Plan, stream: TextIO, tally: Tally) -> None:
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
    producer = threading.Thread(target=produce, args=(options, done, jobs, tally.stop))
    workers = [
        threading.Thread(target=work, args=(options, throttle, tally.stop, jobs, outcomes))
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
                tally.stop.set()  # files in flight still finish; unsent ones wait for a resume
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
    try:
        options = options_from_args(args, environ)
        done = done_paths(options.out)
        found = plan(options, done)
        if found.todo == 0 and found.skipped == 0 and not found.unreadable:
            raise UsageError("found no images or videos in " + " ".join(options.paths))
        stream = open_output(options.out)
    except UsageError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return 130
    tally.skipped = found.skipped
    if found.skipped:
        print(f"skipping {found.skipped} files already done in {options.out}", file=sys.stderr)
    try:
        run(options, done, found, stream, tally)
    except KeyboardInterrupt:
        tally.stop.set()
        tally.interrupted = True
    finally:
        if stream is not sys.stdout:
            stream.close()
    report(tally, time.monotonic() - started, options)
    return 130 if tally.interrupted else tally.exit_code


def report(tally: Tally, elapsed_s: float, options: Options) -> None:
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
    if options.annotator and tally.videos_done:
        videos = f"{tally.videos_done} video" + ("s" if tally.videos_done != 1 else "")
        print(f"--annotated draws images only: no pictures of {videos}", file=log)
    print(tally.summary(elapsed_s), file=log)

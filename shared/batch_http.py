"""One file's predict request, retries included: the multipart body streamed from disk, one
POST, what an answer says about trying again, and the waits between tries.

Only the predict contract is assumed (multipart `file`, `Authorization: Bearer`, JSON back), so
this works against this server and against the Ultralytics Platform alike.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import random
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests
from urllib3.fields import format_multipart_header_param

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
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class Upload:
    """One file's request, the same on every try."""

    url: str  # the predict URL itself
    key: str = field(repr=False)  # never in a repr, a traceback or any output
    fields: Mapping[str, str]
    path: str
    timeout_s: float  # for the answer; connecting has CONNECT_TIMEOUT_S


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange: the parsed 200 body, or the error and what it says about retrying."""

    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    body: Any = None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


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


def post(session: requests.Session, upload: Upload) -> Reply:
    """One try. Raises requests' errors (no answer) and OSError (the file, as it was sent)."""
    body = MultipartBody(upload.fields, upload.path, os.path.basename(upload.path))
    response = session.post(
        upload.url,
        data=body,
        headers={"Authorization": f"Bearer {upload.key}", "Content-Type": body.content_type},
        timeout=(CONNECT_TIMEOUT_S, upload.timeout_s),
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


def attempt(session: requests.Session, upload: Upload) -> tuple[Reply, bool]:
    """One try, and whether trying again may help."""
    try:
        reply = post(session, upload)
    except TRANSIENT_ERRORS as exc:
        return Reply(status=None, error=f"connection error: {exc}"), True
    except requests.RequestException as exc:  # e.g. an invalid URL: the same every time
        return Reply(status=None, error=f"request error: {exc}"), False
    except OSError as exc:  # requests' errors are OSErrors too, so this comes after them
        return Reply(status=None, error=f"cannot read the file: {exc.strerror or exc}"), False
    return reply, reply.status in RETRYABLE


def send(
    session: requests.Session,
    upload: Upload,
    retries: int,
    throttle: Throttle,
    stop: threading.Event,
) -> Reply | None:
    """Try until an answer is final: a success, a failure that retrying cannot help, or
    `retries` retries spent. None: the run stopped first."""
    failures = rate_limited = 0
    while True:
        throttle.wait(stop)
        if stop.is_set():
            return None
        reply, retryable = attempt(session, upload)
        if reply.ok:
            return reply
        if reply.status == 429 and rate_limited < MAX_RATE_LIMITED:
            rate_limited += 1
            delay = reply.retry_after_s
            throttle.defer(RATE_LIMITED_DEFAULT_S if delay is None else delay)
            continue
        if retryable and failures < retries:
            failures += 1
            delay = reply.retry_after_s
            stop.wait(delay if delay is not None else backoff_s(failures))
            continue
        return reply

"""A flood client that costs its host little: one prepared HTTP/1.1 request, sent again on each
keep-alive connection as soon as its answer is parsed (httptools, on uvloop).

bench/load.py's aiohttp clients spend about 0.18 ms of CPU per request. At the thousands of
rejections per second a held answer allows, that is a third of a core taken from the server
the flood shares this machine with, which a real attacker's own machine would pay for. This
client spends a fraction of that, so what `bench.rejections` measures is the server.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools
import uvloop

from bench.load import LevelResult, Upload


def request_bytes(url: str, headers: dict[str, str], upload: Upload) -> bytes:
    """The whole POST, head and multipart body, as it goes on the wire."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Type: {upload.content_type}",
        f"Content-Length: {len(upload.body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + upload.body


class _Flood:
    """The shared state of one flood: what to send, until when, and what came back."""

    def __init__(self, request: bytes, measure_from: float, deadline: float, ok_status: int):
        self.request = request
        self.measure_from = measure_from
        self.deadline = deadline
        self.ok_status = ok_status
        self.result = LevelResult()
        self.last_answer = measure_from

    def record(self, started: float, status: str, ok: bool) -> None:
        if started < self.measure_from:
            return  # warm-up
        now = time.perf_counter()
        self.last_answer = max(self.last_answer, now)
        self.result.statuses[status] += 1
        if ok:
            self.result.latencies_s.append(now - started)
        else:
            self.result.errors += 1
            self.result.first_error = self.result.first_error or status


class _Connection(asyncio.Protocol):
    """One closed-loop client: a request, its answer, the next request."""

    def __init__(self, flood: _Flood, done: asyncio.Future[bool]):
        self.flood = flood
        self.done = done  # True: the deadline passed; False: the server closed, open another
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.started = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.started = time.perf_counter()
        if self.started >= self.flood.deadline:
            self.transport.close()
            return
        self.transport.write(self.flood.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        # A malformed answer, or an upgrade (never asked for): an error, and the socket closed.
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.flood.record(self.started, type(exc).__name__, False)
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.flood.record(self.started, f"HTTP {status}", status == self.flood.ok_status)
        if self.parser.should_keep_alive():
            self._send()
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(time.perf_counter() >= self.flood.deadline)


async def _client(flood: _Flood, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    while time.perf_counter() < flood.deadline:
        done: asyncio.Future[bool] = loop.create_future()
        try:
            await loop.create_connection(functools.partial(_Connection, flood, done), host, port)
        except OSError as exc:
            flood.record(time.perf_counter(), type(exc).__name__, False)
            await asyncio.sleep(0.01)
            continue
        if await done:
            return


async def _run(
    url: str,
    request: bytes,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    ok: int,
    on_measuring: Callable[[], None] | None,
) -> LevelResult:
    parts = urlsplit(url)
    measure_from = time.perf_counter() + warmup_s
    flood = _Flood(request, measure_from, measure_from + duration_s, ok)
    if on_measuring is not None:
        asyncio.get_running_loop().call_later(warmup_s, on_measuring)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    await asyncio.gather(*(_client(flood, host, port) for _ in range(concurrency)))
    # As in bench/load.py: until the last request started before the deadline has answered.
    flood.result.wall_s = max(flood.last_answer, flood.deadline) - measure_from
    return flood.result


def run_flood(
    url: str,
    headers: dict[str, str],
    upload: Upload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    ok_status: int,
    on_measuring: Callable[[], None] | None = None,
) -> LevelResult:
    """`concurrency` connections flooding `url` for `warmup_s`, then `duration_s` measured;
    `on_measuring` is called when the warm-up ends."""
    request = request_bytes(url, headers, upload)
    return uvloop.run(
        _run(url, request, concurrency, duration_s, warmup_s, ok_status, on_measuring)
    )

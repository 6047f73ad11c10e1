"""A closed-loop HTTP load generator: `concurrency` clients, each sending its next request as soon
as the last one answers, for a fixed time.

The multipart bodies are built once, so the client spends its (shared) CPU on sockets only; it
runs in the benchmark's own process and its CPU use is reported beside the server's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass(frozen=True)
class Upload:
    """One prepared multipart request body (a file plus form fields)."""

    body: bytes
    content_type: str

    @classmethod
    def build(cls, filename: str, data: bytes, fields: dict[str, str]) -> Upload:
        boundary = uuid.uuid4().hex
        parts = [
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
            for name, value in fields.items()
        ]
        parts.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        return cls(b"".join(parts), f"multipart/form-data; boundary={boundary}")


@dataclass
class LevelResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    wall_s: float = 0.0
    first_error: str | None = None
    statuses: Counter[str] = field(default_factory=Counter)  # answers by HTTP status (or error)


async def _client(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    uploads: list[Upload],
    offset: int,
    deadline: float,
    result: LevelResult | None,
    ok_status: int = 200,
) -> None:
    i = offset
    while time.perf_counter() < deadline:
        upload = uploads[i % len(uploads)]
        i += 1
        started = time.perf_counter()
        try:
            async with session.post(
                url, data=upload.body, headers={**headers, "Content-Type": upload.content_type}
            ) as response:
                await response.read()
                ok = response.status == ok_status
                status = f"HTTP {response.status}"
        except aiohttp.ClientError as exc:
            ok, status = False, type(exc).__name__
        elapsed = time.perf_counter() - started
        if result is None:
            continue
        result.statuses[status] += 1
        if ok:
            result.latencies_s.append(elapsed)
        else:
            result.errors += 1
            result.first_error = result.first_error or status


async def run_level(
    url: str,
    headers: dict[str, str],
    uploads: list[Upload],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    ok_status: int = 200,
) -> LevelResult:
    """Warm up (queues filled, connections open), then measure `duration_s`.

    Answers with `ok_status` (200 unless measuring how fast errors come back) are timed; any
    other is counted as an error. `statuses` counts every answer by status.

    The measured wall time runs until the last request started before the deadline has
    answered: the server stays saturated while those drain, so images/s is not diluted.
    """
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warmup_s > 0:
            deadline = time.perf_counter() + warmup_s
            await asyncio.gather(
                *(
                    _client(session, url, headers, uploads, i, deadline, None)
                    for i in range(concurrency)
                )
            )
        result = LevelResult()
        started = time.perf_counter()
        deadline = started + duration_s
        await asyncio.gather(
            *(
                _client(session, url, headers, uploads, i, deadline, result, ok_status)
                for i in range(concurrency)
            )
        )
        result.wall_s = time.perf_counter() - started
    return result


async def fetch_json(
    url: str, headers: dict[str, str], upload: Upload, session: aiohttp.ClientSession | None = None
) -> tuple[int, dict]:
    """One request whose answer is read (on `session`'s open connection when given)."""
    status, _, body = await fetch(url, headers, upload, session)
    return status, body


async def fetch(
    url: str, headers: dict[str, str], upload: Upload, session: aiohttp.ClientSession | None = None
) -> tuple[int, dict[str, str], dict]:
    """Like fetch_json, with the response headers too."""
    if session is None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as own:
            return await fetch(url, headers, upload, own)
    async with session.post(
        url, data=upload.body, headers={**headers, "Content-Type": upload.content_type}
    ) as response:
        body = await response.json(content_type=None)
        return response.status, dict(response.headers), body

"""The upload limit at the proxy, live: a huge body is cut off before any process holds much of it.

Over raw sockets, to both the shared service and a dedicated endpoint, while the resident memory
of the proxy and of every ingress replica is sampled: a 1 GB chunked body, a 1 GB body behind a
false `Content-Length: 1000`, a declared 1 GiB (refused before the body), and a body at the limit
(accepted, so buffered once in the proxy and handed on). The proxy's own errors are JSON too.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
import requests

from shared.limits import MB, body_cap
from tests.processes import RssSampler, actor_pids

LIMIT = 10 * MB  # serve_config.yaml's max_upload_mb, and YOLO_MAX_UPLOAD_MB's default
VIDEO_LIMIT = 100 * MB  # max_video_mb: a keyed multipart body to a dedicated predict route
CAP = body_cap(LIMIT)
GIB = 1024 * MB
PATHS = ("/endpoints/yolo26n/predict", "/api/models/yolo26n/predict")
# Each route's upload limit: the dedicated route takes video.
LIMITS = {PATHS[0]: VIDEO_LIMIT, PATHS[1]: LIMIT}


def growth_bound(path: str) -> int:
    """The bounds of the issue: no process grows by more than about twice the cap."""
    return 2 * body_cap(LIMITS[path]) + 16 * MB


def sent_bound(path: str) -> int:
    """The client gets no further than the cap plus what the two ends' socket buffers take."""
    return body_cap(LIMITS[path]) + 32 * MB


def too_large(path: str) -> dict[str, str]:
    return {"error": f"File too large: the limit is {LIMITS[path] // MB} MB"}


BOUNDARY = b"uploadlimitsboundary"
PREAMBLE = (
    b"--" + BOUNDARY + b"\r\n"
    b'Content-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)


@dataclass
class Exchange:
    sent: int = 0
    cut: str = ""  # how sending ended: the exception, or "" when everything went
    answer: bytes = b""
    closed: bool = False  # the server closed the connection (EOF or reset) after answering
    responses: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)


def parse(answer: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in `answer`, in order (bodies with a Content-Length only)."""
    out = []
    while answer.startswith(b"HTTP/1.1 "):
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
        size = int(headers.get("content-length", len(rest)))
        out.append((int(status_line.split()[1]), headers, rest[:size]))
        answer = rest[size:]
    return out


def exchange(server, path: str, headers: bytes, body: Iterator[bytes]) -> Exchange:
    """Send a POST's head, then `body` until the server stops taking it, reading meanwhile."""
    result = Exchange()
    sock = socket.create_connection(("127.0.0.1", server.ports.http), timeout=30)

    def read() -> None:
        try:
            while data := sock.recv(1 << 16):
                result.answer += data
            result.closed = True
        except ConnectionResetError:
            result.closed = True
        except OSError:
            pass  # timed out: the server kept the connection open

    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY.decode()}\r\n"
    ).encode()
    reader = threading.Thread(target=read, daemon=True)
    with sock:
        sock.sendall(head + headers + b"\r\n")
        reader.start()
        for piece in body:
            try:
                sock.sendall(piece)
            except OSError as exc:  # broken pipe, reset, or a server that stopped reading
                result.cut = type(exc).__name__
                break
            result.sent += len(piece)
        reader.join(60)
    result.responses = parse(result.answer)
    return result


def megabytes(total: int, first: bytes = b"") -> Iterator[bytes]:
    """`total` bytes in 1 MB pieces of random data, starting with `first`."""
    piece = os.urandom(MB)
    yield first
    for _ in range((total - len(first)) // MB):
        yield piece


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        if piece:
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


@pytest.fixture(scope="module")
def pids(server) -> dict[str, list[int]]:
    actors = actor_pids(server)
    found = {
        "proxy": [p for p, name in actors.items() if name == "ProxyActor"],
        "ingress": [p for p, name in actors.items() if name.endswith(":Ingress")],
    }
    assert found["proxy"] and found["ingress"], actors
    return found


def measured(
    server,
    pids,
    path: str,
    headers: bytes,
    body: Iterator[bytes],
    what: str,
    bounded: tuple[str, ...] = ("proxy", "ingress"),
) -> Exchange:
    """`exchange` while sampling every proxy and ingress process; asserts the growth bound
    for the `bounded` ones."""
    with ExitStack() as stack:
        samplers = {
            (role, pid): stack.enter_context(RssSampler([pid]))
            for role, group in pids.items()
            for pid in group
        }
        result = exchange(server, path, headers, body)
    growth = {role: max(s.growth for (r, _), s in samplers.items() if r == role) for role in pids}
    print(
        f"\n{what} -> {path}: sent {result.sent / MB:.1f} MB ({result.cut or 'all'}), "
        f"answers {[(s, b[:80]) for s, _, b in result.responses]}, "
        f"RSS growth proxy {growth['proxy'] / MB:.1f} MB, "
        f"ingress (largest) {growth['ingress'] / MB:.1f} MB"
    )
    for role in bounded:
        assert growth[role] < growth_bound(path), f"{role} grew by {growth[role] / MB:.1f} MB"
    return result


@pytest.mark.parametrize("path", PATHS)
def test_a_1gb_chunked_body_is_cut_off_at_the_cap(server, pids, path: str) -> None:
    body = chunked(megabytes(GIB, PREAMBLE))
    result = measured(server, pids, path, b"Transfer-Encoding: chunked\r\n", body, "1 GB chunked")
    assert result.sent < sent_bound(path)
    assert result.closed
    ((status, headers, content),) = result.responses
    assert (status, json.loads(content)) == (413, too_large(path))
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"


@pytest.mark.parametrize("path", PATHS)
def test_a_1gb_body_behind_a_false_small_length_is_not_buffered(server, pids, path) -> None:
    # The server takes 1000 bytes as the body (a truncated form) and the rest as the next
    # request, which is no HTTP: uvicorn refuses it (plain text: below any ASGI middleware)
    # and closes the connection, so nothing buffers the gigabyte.
    first = PREAMBLE + b"\xff" * (1000 - len(PREAMBLE))
    body = megabytes(GIB, first)
    result = measured(server, pids, path, b"Content-Length: 1000\r\n", body, "1 GB, CL 1000")
    assert result.sent < sent_bound(path)
    assert result.closed
    assert result.responses and all(400 <= s < 500 for s, _, _ in result.responses)


@pytest.mark.parametrize("path", PATHS)
def test_a_declared_length_over_the_cap_is_refused_before_the_body(server, path: str) -> None:
    result = exchange(server, path, f"Content-Length: {GIB}\r\n".encode(), iter(()))
    assert result.closed  # answered and closed with not a byte of the body sent
    ((status, headers, content),) = result.responses
    assert (status, json.loads(content)) == (413, too_large(path))
    assert headers["connection"] == "close"
    assert "x-request-id" not in headers  # answered by the guard, before Serve's proxy


def test_a_body_at_the_limit_is_taken_and_held_once(server, pids) -> None:
    # Accepted by the proxy (buffered, then handed to the ingress), refused by the ingress as
    # no image: what an upload at the limit costs each process. Only the proxy's share is this
    # file's concern; the ingress's (Ray's copy, the form parser's, the file read) is printed.
    data = PREAMBLE + os.urandom(LIMIT - 4096) + b"\r\n--" + BOUNDARY + b"--\r\n"
    length = f"Content-Length: {len(data)}\r\nConnection: close\r\n".encode()
    pieces = (data[i : i + MB] for i in range(0, len(data), MB))
    result = measured(server, pids, PATHS[1], length, pieces, "at the limit", ("proxy",))
    assert not result.cut and result.sent == len(data)
    ((status, headers, _),) = result.responses
    assert status == 400 and headers["content-type"] == "application/json"


def test_predictions_still_work(server, bus) -> None:
    assert server.predict("yolo26n", bus).status_code == 200
    assert server.predict("yolo26n", bus, prefix="/endpoints/yolo26n").status_code == 200


def test_the_proxys_own_errors_are_json(server, bus) -> None:
    # Serve's proxy obeys a per-request timeout header (0.001 s would make it answer its
    # plain-text 408 here); the guard drops it, so a client can neither shorten nor disable
    # the proxy's timeout. The 408 -> JSON 504 translation is tests/unit/test_edge.py's.
    response = requests.post(
        server.url("/api/models/yolo26n/predict"),
        headers={**server.headers(), "x-request-timeout-seconds": "0.001"},
        files={"file": ("bus.jpg", bus.read_bytes())},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    # `/` is the shared service's prefix, so it answers unknown paths itself: JSON too.
    for path in ("/nope/x", "/endpoints/does-not-exist/predict"):
        response = requests.post(server.url(path), headers=server.headers(), timeout=30)
        assert response.status_code == 404 and "error" in response.json(), path
    # What only the proxy answers, and is no error, passes untouched.
    routes = requests.get(server.url("/-/routes"), timeout=30)
    assert routes.status_code == 200 and routes.json()["/"] == "shared"
    health = requests.get(server.url("/-/healthz"), timeout=30)
    assert health.status_code == 200 and health.headers["content-type"].startswith("text/plain")

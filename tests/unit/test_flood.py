"""bench/flood.py against a real HTTP/1.1 server: keep-alive, a server that closes, statuses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.flood import request_bytes, run_flood
from bench.load import Upload

UPLOAD = Upload.build("tiny.png", b"\x89PNG" + bytes(60), {"conf": "0.5"})


class _Refusing(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).answers += 1
            close = type(self).answers % 7 == 0  # now and then the server ends the connection
        good = body == UPLOAD.body and self.headers["Authorization"] == "Bearer spent"
        payload = b'{"error": "Rate limit exceeded"}'
        self.send_response(429 if good else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        if close:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api/models/m/predict?x=1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_request_bytes_are_one_well_formed_post() -> None:
    raw = request_bytes("http://h:81/a/b?c=d", {"Authorization": "Bearer k"}, UPLOAD)
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /a/b?c=d HTTP/1.1"
    assert "Host: h:81" in lines and "Authorization: Bearer k" in lines
    assert f"Content-Length: {len(UPLOAD.body)}" in lines
    assert body == UPLOAD.body


def test_flood_counts_every_answer_and_reconnects_when_closed(server: str) -> None:
    result = run_flood(server, {"Authorization": "Bearer spent"}, UPLOAD, 4, 0.5, 0.2, 429)
    answered = sum(result.statuses.values())
    assert set(result.statuses) == {"HTTP 429"}
    assert answered > 7 * 4  # well past the closes: every client reconnected
    assert len(result.latencies_s) == answered and result.errors == 0
    assert result.wall_s >= 0.5


def test_flood_counts_other_statuses_as_errors(server: str) -> None:
    measuring = threading.Event()
    result = run_flood(
        server, {"Authorization": "Bearer other"}, UPLOAD, 2, 0.3, 0.1, 429, measuring.set
    )
    assert measuring.is_set()
    assert set(result.statuses) == {"HTTP 400"}
    assert result.errors == sum(result.statuses.values()) and not result.latencies_s
    assert result.first_error == "HTTP 400"

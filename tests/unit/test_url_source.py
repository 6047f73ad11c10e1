"""URL sources: only public addresses, capped size, one deadline; served here from 127.0.0.1.

The fetching tests run a real HTTP server on 127.0.0.1 and pass a permissive address check,
since the real one (rightly) refuses loopback; the refusal itself is tested with the real check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import ApiError
from shared.url_source import fetch_url, is_public_address, is_url, resolve_checked

LIMIT = 100_000
TOO_LARGE = ApiError(413, "File too large")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/image":
            self._send(200, b"x" * 1000)
        elif self.path == "/large":
            self._send(200, b"x" * (LIMIT + 1))
        elif self.path == "/large-unannounced":
            # No Content-Length: the cap must hold while streaming.
            self.send_response(200)
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"x" * 10_000)
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            time.sleep(3)
        elif self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect-to"))
            self.end_headers()
        elif self.path == "/redirect-out":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def local() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch(url: str, *, allow_loopback: bool = True, timeout_s: float = 5) -> bytes:
    allowed = (lambda a: a == "127.0.0.1") if allow_loopback else is_public_address
    return fetch_url(url, limit=LIMIT, timeout_s=timeout_s, too_large=TOO_LARGE, allowed=allowed)


def refused(url: str, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fetch(url, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # cloud metadata
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", False),
    ],
)
def test_only_public_unicast_addresses_are_allowed(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.jpg",
        "http://localhost/x.jpg",
        "http://[::1]/x.jpg",
        "http://2130706433/x.jpg",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x.jpg",
    ],
)
def test_private_loopback_and_link_local_hosts_are_refused(url: str) -> None:
    error = refused(url, allow_loopback=False)
    assert error.status == 400
    assert "non-public address" in error.message or "cannot resolve" in error.message


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one internal address is refused, whatever the order."""
    import socket

    def two_addresses(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    with pytest.raises(ApiError) as caught:
        resolve_checked("mixed.example", 80)
    assert "non-public" in caught.value.message


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x.jpg", "file:///etc/passwd", "http:///x.jpg", "http://u:p@example.com/"],
)
def test_other_schemes_and_credentials_are_refused(url: str) -> None:
    assert refused(url).status == 400


def test_is_url() -> None:
    assert is_url("https://example.com/a.jpg")
    assert is_url("HTTP://example.com/a.jpg")
    assert not is_url("data:image/png;base64,AAAA")
    assert not is_url("/9j/4AAQSkZJRg==")


def test_an_image_is_fetched(local: str) -> None:
    assert fetch(f"{local}/image") == b"x" * 1000


def test_redirects_are_followed_and_checked(local: str) -> None:
    assert fetch(f"{local}/redirect-to/image") == b"x" * 1000
    assert "non-public" in refused(f"{local}/redirect-out").message
    assert "redirects" in refused(f"{local}/loop").message


def test_over_the_limit_is_413_announced_or_not(local: str) -> None:
    assert refused(f"{local}/large") is TOO_LARGE
    assert refused(f"{local}/large-unannounced") is TOO_LARGE


def test_a_slow_server_times_out(local: str) -> None:
    # The server answers after 3 s; "timed out" means the fetch gave up first.
    error = refused(f"{local}/slow", timeout_s=0.5)
    assert error.status == 400
    assert "timed out" in error.message


def test_http_errors_and_closed_ports_are_400(local: str) -> None:
    assert "HTTP 404" in refused(f"{local}/missing").message
    assert "connection failed" in refused("http://127.0.0.1:9/x.jpg").message

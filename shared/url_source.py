"""Fetching an `http(s)` image URL given as `source`, safely (only when the config enables it).

A server that fetches URLs for its clients can be pointed at its own network. So every address
the host name resolves to must be public (not private, loopback, link-local, multicast or
reserved), the connection goes to the address that was checked (no second lookup a DNS
rebinding could change), redirects are checked the same way, the body is capped at the upload
limit while it streams, and the whole fetch has one deadline. Plain stdlib, no Ray.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from shared.errors import ApiError, bad_request

MAX_REDIRECTS = 3
CHUNK = 64 * 1024
USER_AGENT = "yolo-endpoints/url-source"


def is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


AddressCheck = Callable[[str], bool]


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line


def _fetch_error(detail: str) -> ApiError:
    return bad_request(f"Could not fetch 'source' URL: {detail}")


def _parse(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _fetch_error("malformed URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise _fetch_error("only http and https URLs with a host are accepted")
    if parts.username or parts.password:
        raise _fetch_error("credentials in the URL are not accepted")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


def resolve_checked(host: str, port: int, allowed: AddressCheck = is_public_address) -> str:
    """Resolve `host` and return an address to connect to, if every address it has is allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise _fetch_error(f"cannot resolve host {host!r}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise _fetch_error(f"cannot resolve host {host!r}")
    for address in addresses:
        if not allowed(address):
            # Checking all of them: a host with one public and one internal address could
            # otherwise be steered to the internal one.
            raise _fetch_error(f"host {host!r} resolves to a non-public address")
    return addresses[0]


def _connection(target: _Target, address: str, timeout: float) -> http.client.HTTPConnection:
    def connect_to_checked(_: object, timeout: float, source: object = None) -> socket.socket:
        return socket.create_connection((address, target.port), timeout)

    if target.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    # http.client opens its socket through this hook; TLS still verifies `target.host`.
    conn._create_connection = connect_to_checked  # type: ignore[attr-defined]
    return conn


def _read_capped(
    response: http.client.HTTPResponse, limit: int, deadline: float, too_large: ApiError
) -> bytes:
    declared = response.getheader("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            raise _fetch_error("timed out")
        chunk = response.read1(CHUNK) if hasattr(response, "read1") else response.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)


def fetch_url(
    url: str,
    *,
    limit: int,
    timeout_s: float,
    too_large: ApiError,
    allowed: AddressCheck = is_public_address,
) -> bytes:
    """GET `url` and return at most `limit` bytes of body; 4xx ApiError for anything else.

    Blocking: call it from a worker thread. `allowed` exists so tests can fetch from 127.0.0.1.
    """
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        target = _parse(url)
        address = resolve_checked(target.host, target.port, allowed)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _fetch_error("timed out")
        conn = _connection(target, address, remaining)
        try:
            conn.request(
                "GET", target.path, headers={"User-Agent": USER_AGENT, "Accept": "image/*"}
            )
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("location")
                if not location:
                    raise _fetch_error(f"HTTP {response.status} without a Location")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise _fetch_error(f"HTTP {response.status}")
            return _read_capped(response, limit, deadline, too_large)
        except TimeoutError as exc:
            raise _fetch_error("timed out") from exc
        except ssl.SSLError as exc:
            raise _fetch_error("TLS failed") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _fetch_error("connection failed") from exc
        finally:
            conn.close()
    raise _fetch_error(f"more than {MAX_REDIRECTS} redirects")

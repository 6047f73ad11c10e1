"""Web origins for the CORS allow-list: checked when the config is loaded, not per request.

A browser sends `Origin: scheme://host[:port]` exactly, so an allow-list entry with a path, a
trailing slash or upper-case letters would never match and silently allow nobody; such entries
are rejected instead. `*` allows every origin (safe only because keys are Bearer headers, never
cookies: a page on another origin can use a key only if it already has it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

ANY = "*"


def parse_origin(value: str) -> str:
    """`value` as a browser would send it in `Origin`, or ValueError saying what is wrong."""
    if value == ANY:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"CORS origin {value!r}: expected scheme://host[:port], e.g. https://a.b")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"CORS origin {value!r}: only scheme://host[:port], no path or user")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"CORS origin {value!r}: invalid port") from exc
    default_port = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname  # lower-cased by urlsplit; IPv6 without brackets
    if ":" in host:
        host = f"[{host}]"
    suffix = f":{port}" if port is not None and port != default_port else ""
    origin = f"{parts.scheme}://{host}{suffix}"
    if origin != value:
        raise ValueError(f"CORS origin {value!r}: write it as a browser sends it, {origin!r}")
    return origin


def parse_origins(values: list[str]) -> list[str]:
    origins = [parse_origin(v) for v in values]
    if ANY in origins and len(origins) > 1:
        raise ValueError("CORS origins: '*' allows every origin; list it alone")
    return origins

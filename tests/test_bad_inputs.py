"""A corpus of bad requests: each gets its JSON error and status, and the service keeps serving.

Every case is sent over real HTTP to the shared route and to a dedicated endpoint (cases about
model IDs, with raw paths which `requests` would normalise, to the shared route only). After the
whole corpus, a good request must still succeed on both.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from deployments.uploads import MAX_FIELDS
from tests.samples import bus_jpeg, bus_rgb, encode, jpeg_with_size, png_bomb

MODEL = "yolo26n"
MB = 1024 * 1024
ROUTES = {"shared": f"/api/models/{MODEL}/predict", "dedicated": f"/endpoints/{MODEL}/predict"}


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    files: Callable[[], list[tuple[str, Any]]] | None = None
    data: dict[str, Any] | list[tuple[str, str]] = field(default_factory=dict)
    path: str | None = None  # sent as is, never normalised; None: the predict route under test
    raw_body: bytes | Iterator[bytes] | None = None
    content_type: str | None = None
    method: str = "POST"
    needle: str = ""  # a word the error message must contain


def image(data: bytes | Callable[[], bytes]) -> Callable[[], list[tuple[str, Any]]]:
    return lambda: [("file", ("image", data() if callable(data) else data))]


@cache
def truncated_jpeg() -> bytes:
    return bus_jpeg()[: len(bus_jpeg()) // 2]


@cache
def tiny_png() -> bytes:
    return encode(bus_rgb().crop((0, 0, 32, 32)), "PNG")


def endless_chunks() -> Iterator[bytes]:
    """A multipart body with no Content-Length that would never end."""
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    for _ in range(40):  # 40 MB if nobody stops reading
        yield b"\xff" * MB


CASES = [
    # -- not an image (400) --
    Case("zero-bytes", 400, image(b""), needle="empty"),
    Case("truncated-jpeg", 400, image(truncated_jpeg), needle="Invalid image"),
    Case("jpeg-marker-only", 400, image(b"\xff\xd8\xff\xe0"), needle="Invalid image"),
    Case("text", 400, image(b"just some text\n"), needle="Invalid image"),
    Case("html", 400, image(b"<!DOCTYPE html><html><body>hi</body></html>"), needle="Invalid"),
    Case("json", 400, image(b'{"image": "bus.jpg"}'), needle="Invalid image"),
    Case("png-header-garbage", 400, image(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)),
    # A GIF is a video: on dedicated endpoints it is decoded as one (tests/test_video_and_batches).
    Case(
        "gif-is-video",
        400,
        image(lambda: encode(bus_rgb(), "GIF")),
        path=ROUTES["shared"],
        needle="Video is supported on dedicated endpoints",
    ),
    Case("eps-not-parsed", 400, image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n")),
    Case("tiff-header-only", 400, image(b"II*\x00\x08\x00\x00\x00"), needle="Invalid image"),
    Case("bomb-png", 400, image(lambda: png_bomb(9000, 9000)), needle="exceeds the limit"),
    Case("bomb-jpeg-header", 400, image(lambda: jpeg_with_size(65000, 65000))),
    # -- malformed form (400) --
    Case("wrong-field-name", 400, lambda: [("image", ("a.jpg", bus_jpeg()))], needle="'image'"),
    Case(
        "seventeen-files",
        400,
        lambda: [("file", (f"{i}.png", tiny_png())) for i in range(17)],
        needle="at most 16",
    ),
    Case("missing-file", 400, None, {"conf": "0.5"}, needle="Missing 'file'"),
    Case(
        "empty-multipart",
        400,
        None,
        raw_body=b"--b--\r\n",
        content_type="multipart/form-data; boundary=b",
    ),
    Case("json-body", 400, None, raw_body=b'{"conf": 0.5}', content_type="application/json"),
    Case("no-boundary", 400, None, raw_body=b"x", content_type="multipart/form-data"),
    Case(
        "file-and-source",
        400,
        image(bus_jpeg()),
        {"source": base64.b64encode(b"x").decode()},
        needle="Invalid image",  # each of several images is checked
    ),
    Case("bad-base64-source", 400, None, {"source": "%%% not base64 %%%"}, needle="'source'"),
    Case(
        "url-source-off-by-default",
        400,
        None,
        {"source": "http://127.0.0.1:1/bus.jpg"},
        needle="URL sources are disabled",
    ),
    Case(
        "too-many-fields",
        400,
        image(bus_jpeg()),
        [(f"f{i}", "1") for i in range(MAX_FIELDS + 1)],
        needle="Too many fields",
    ),
    Case("too-large-field", 400, image(bus_jpeg()), {"conf": "0" * 5000}, needle="longer"),
    # -- bad parameters (400, naming the field and range) --
    Case("conf-not-a-number", 400, image(bus_jpeg()), {"conf": "high"}, needle="'conf'"),
    Case("conf-too-high", 400, image(bus_jpeg()), {"conf": "1.5"}, needle="0.01 to 1.0"),
    Case("conf-too-low", 400, image(bus_jpeg()), {"conf": "0"}, needle="0.01 to 1.0"),
    Case("iou-too-high", 400, image(bus_jpeg()), {"iou": "0.99"}, needle="0.0 to 0.95"),
    Case("imgsz-too-big", 400, image(bus_jpeg()), {"imgsz": "4096"}, needle="32 to 1280"),
    Case("imgsz-fraction", 400, image(bus_jpeg()), {"imgsz": "640.5"}, needle="'imgsz'"),
    Case("decimals-too-many", 400, image(bus_jpeg()), {"decimals": "11"}, needle="'decimals'"),
    Case("normalize-maybe", 400, image(bus_jpeg()), {"normalize": "maybe"}, needle="true or"),
    Case(
        "conf-repeated",
        400,
        image(bus_jpeg()),
        [("conf", "0.3"), ("conf", "0.4")],
        needle="given 2 times",
    ),
    Case("unknown-parameter", 400, image(bus_jpeg()), {"confidence": "0.5"}, needle="confidence"),
    # -- too large (413), detected while reading --
    Case("over-limit-file", 413, image(lambda: b"\xff" * (10 * MB + 1)), needle="10 MB"),
    Case("over-limit-declared", 413, image(lambda: b"\xff" * (20 * MB)), needle="10 MB"),
    # The dedicated route's keyed multipart limit is the video one (tests/test_upload_limits.py).
    Case(
        "over-limit-chunked",
        413,
        None,
        path=ROUTES["shared"],
        raw_body=endless_chunks(),
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "over-limit-base64",
        413,
        None,
        {"source": base64.b64encode(b"\xff" * (10 * MB + 3)).decode()},
    ),
    # -- model IDs (404), including path-like ones --
    Case("unknown-model", 404, image(bus_jpeg()), path="/api/models/nope/predict"),
    Case("dot-dot", 404, image(bus_jpeg()), path="/api/models/../x/predict"),
    Case("dot-dot-encoded", 404, image(bus_jpeg()), path="/api/models/%2e%2e/predict"),
    Case("slash-encoded", 404, image(bus_jpeg()), path="/api/models/..%2Fx/predict"),
    Case("all-encoded", 404, image(bus_jpeg()), path="/api/models/%2e%2e%2f%2e%2e%2fx/predict"),
    Case("backslash", 404, image(bus_jpeg()), path="/api/models/..%5Cx/predict"),
    Case("weights-file", 404, image(bus_jpeg()), path="/api/models/yolo26n.pt/predict"),
    Case("absolute-path", 404, image(bus_jpeg()), path="/api/models/%2Fetc%2Fpasswd/predict"),
    Case("nul-byte", 404, image(bus_jpeg()), path="/api/models/yolo26n%00/predict"),
    Case("long-id", 404, image(bus_jpeg()), path=f"/api/models/{'a' * 300}/predict"),
    Case("owner-project-dot-dot", 404, image(bus_jpeg()), path="/api/models/a/../../predict"),
    # -- wrong method (405) --
    Case("get-predict", 405, None, method="GET"),
]


def send(server, case: Case, path: str) -> tuple[int, dict[str, str], bytes]:
    """Over a raw connection: the path exactly as written, the body as given."""
    if case.raw_body is not None:
        body: Any = case.raw_body
        content_type = case.content_type or ""
    elif case.files is not None or case.data:
        # Always multipart, as the spec's clients send it: fields as parts without a filename.
        parts = (case.files() if case.files else []) + [
            (k, (None, v)) for k, v in _items(case.data)
        ]
        prepared = requests.Request("POST", server.url("/"), files=parts).prepare()
        body, content_type = prepared.body, prepared.headers["Content-Type"]
    else:
        body, content_type = None, ""
    headers = {**server.headers()}
    if content_type:
        headers["Content-Type"] = content_type
    if isinstance(body, bytes):
        headers["Content-Length"] = str(len(body))
    elif body is not None:
        headers["Transfer-Encoding"] = "chunked"
    host = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=120)
    try:
        conn.putrequest(case.method, path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            if isinstance(body, bytes):
                conn.send(body)
            elif body is not None:
                for chunk in body:
                    conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and stopped reading: the point of a 413
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _items(data: dict[str, Any] | list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(data.items()) if isinstance(data, dict) else list(data)


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


ROUTED = [(route, case) for route in ROUTES for case in CASES if route == "shared" or not case.path]


@pytest.mark.parametrize(("route", "case"), ROUTED, ids=[f"{r}-{c.name}" for r, c in ROUTED])
def test_bad_input(server, route: str, case: Case) -> None:
    import json

    status, headers, raw = send(server, case, case.path or ROUTES[route])
    assert status == case.status, (case.name, raw[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    body = json.loads(raw)
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]
    assert case.needle in body["error"], (case.name, body["error"])


@pytest.mark.parametrize("route", ROUTES)
def test_a_good_request_still_succeeds_after_the_corpus(server, route: str) -> None:
    prefix = ROUTES[route].removesuffix("/predict") if route == "dedicated" else None
    response = server.predict(MODEL, bus_jpeg(), prefix=prefix, conf=0.25, iou=0.7, imgsz=640)
    assert response.status_code == 200, response.text
    results = response.json()["images"][0]["results"]
    assert {r["name"] for r in results} >= {"bus", "person"}

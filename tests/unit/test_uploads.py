"""The upload reader on a real Starlette request: limits hold while the body streams in."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from starlette.requests import Request

from deployments.uploads import (
    MAX_FIELDS,
    URLENCODED,
    Upload,
    UploadLimits,
    UrlSources,
    read_upload,
)
from shared.errors import ApiError
from tests.videos import bus_video

LIMIT = 1024 * 1024
BOUNDARY = "xXxBOUNDARYxXx"
CHUNK = 64 * 1024


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Stream:
    """An ASGI receive() that hands out the body in chunks and counts what was taken."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.taken = 0

    async def __call__(self) -> dict:
        chunk = next(self.chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        self.taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}


def chunked(data: bytes) -> Iterator[bytes]:
    return (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))


def read(
    chunks: Iterator[bytes],
    *,
    length: int | None = None,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    urls: UrlSources | None = None,
    limits: UploadLimits | None = None,
) -> tuple[Upload | ApiError, Stream]:
    headers = [(b"content-type", content_type.encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    stream = Stream(chunks)
    request = Request({"type": "http", "method": "POST", "headers": headers}, stream)
    try:
        return asyncio.run(read_upload(request, limits or UploadLimits(LIMIT), urls)), stream
    except ApiError as exc:
        return exc, stream


def upload(*parts: bytes, **kwargs) -> Upload:
    data = body(*parts)
    result, _ = read(chunked(data), length=len(data), **kwargs)
    assert isinstance(result, Upload), result
    return result


def error(*parts: bytes, **kwargs) -> ApiError:
    data = body(*parts)
    result, _ = read(chunked(data), length=len(data), **kwargs)
    assert isinstance(result, ApiError), result
    return result


def test_file_and_fields() -> None:
    got = upload(part("file", b"\xff\xd8image", "a.jpg"), part("conf", b"0.5"))
    assert got.data == b"\xff\xd8image"
    assert got.fields == {"conf": ["0.5"]}


def test_file_sent_without_a_filename_keeps_its_bytes() -> None:
    binary = bytes(range(256)) * 10
    assert upload(part("file", binary)).data == binary


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(b"\x89PNG bytes"),
        b"data:image/png;base64," + base64.b64encode(b"\x89PNG bytes"),
    ],
)
def test_base64_source(value: bytes) -> None:
    assert upload(part("source", value)).data == b"\x89PNG bytes"


def test_an_oversized_body_stops_being_read_at_the_limit() -> None:
    """No Content-Length (chunked): the reader stops soon after the limit, not at the end."""
    endless = (part("file", b"", "a.jpg")[:-2] + b"x" * CHUNK for _ in range(10_000))
    result, stream = read(endless)
    assert isinstance(result, ApiError) and result.status == 413
    assert stream.taken <= LIMIT + 2 * CHUNK + 1024  # ~1 MB read of a 650 MB body


def test_a_declared_oversized_body_is_not_read_at_all() -> None:
    result, stream = read(iter([b"x"]), length=50 * LIMIT)
    assert isinstance(result, ApiError) and result.status == 413
    assert stream.taken == 0


def test_an_oversized_base64_source_is_413() -> None:
    big = base64.b64encode(b"x" * (LIMIT + 10))
    assert error(part("source", big)).status == 413


@pytest.mark.parametrize(
    ("parts", "needle"),
    [
        ((), "Missing 'file'"),
        ((part("image", b"x", "a.jpg"),), "Unexpected file field 'image'"),
        (tuple(part("file", b"x", f"{i}.jpg") for i in range(17)), "at most 16 per request"),
        (tuple(part("source", b"eA==") for i in range(17)), "Too many images: 17 sent"),
        ((part("source", b"not base64!"),), "Invalid 'source'"),
        ((part("source", b"http://127.0.0.1/x.jpg"),), "URL sources are disabled"),
        ((part("file", b"x", "a.jpg"), part("conf", b"1" * 300)), "longer than 256 bytes"),
        (tuple(part(f"f{i}", b"1") for i in range(MAX_FIELDS + 1)), "Too many fields"),
    ],
    ids=[
        "nothing",
        "wrong-name",
        "17-files",
        "17-sources",
        "bad-base64",
        "url-off",
        "long-field",
        "many-fields",
    ],
)
def test_malformed_forms_are_400(parts: tuple[bytes, ...], needle: str) -> None:
    got = error(*parts)
    assert got.status == 400
    assert needle in got.message


def test_not_multipart_is_400() -> None:
    result, _ = read(iter([b"{}"]), length=2, content_type="application/json")
    assert isinstance(result, ApiError) and result.status == 400
    assert "multipart/form-data" in result.message and URLENCODED in result.message
    garbage, _ = read(iter([b"--nope\r\n\r\n"]), length=10)
    assert isinstance(garbage, ApiError) and garbage.status == 400


def test_url_source_when_enabled_is_checked() -> None:
    # Enabled, the loopback URL is fetched only after the address check, which refuses it.
    got = error(part("source", b"http://127.0.0.1:9/x.jpg"), urls=UrlSources(enabled=True))
    assert got.status == 400
    assert "non-public address" in got.message


# -- application/x-www-form-urlencoded: what the official SDK sends for a `source` alone --


def read_form(fields: list[tuple[str, str | bytes]], **kwargs) -> Upload | ApiError:
    data = urlencode(fields).encode()
    result, _ = read(chunked(data), length=len(data), content_type=URLENCODED, **kwargs)
    return result


def form_error(fields: list[tuple[str, str | bytes]]) -> ApiError:
    result = read_form(fields)
    assert isinstance(result, ApiError), result
    return result


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(b"\x89PNG bytes"),
        b"data:image/png;base64," + base64.b64encode(b"\x89PNG bytes"),
    ],
    ids=["base64", "data-uri"],
)
def test_urlencoded_source(value: bytes) -> None:
    got = read_form([("source", value), ("conf", "0.5"), ("imgsz", "320")])
    assert isinstance(got, Upload), got
    assert got.data == b"\x89PNG bytes"
    assert got.fields == {"conf": ["0.5"], "imgsz": ["320"]}


def test_urlencoded_with_a_charset_and_unencoded_plus() -> None:
    """curl -d sends base64's '+' raw, which form decoding reads as a space."""
    image = bytes([0xFB, 0xEF, 0xBE]) * 4  # base64 "++++..." : every '+' would become ' '
    raw = b"source=" + base64.b64encode(image)
    result, _ = read(iter([raw]), length=len(raw), content_type=URLENCODED + "; charset=utf-8")
    assert isinstance(result, Upload), result
    assert result.data == image


def test_urlencoded_declared_oversized_body_is_not_read_at_all() -> None:
    result, stream = read(iter([b"source="]), length=50 * LIMIT, content_type=URLENCODED)
    assert isinstance(result, ApiError) and result.status == 413
    assert stream.taken == 0


def test_urlencoded_oversized_body_stops_being_read_at_the_limit() -> None:
    endless = iter([b"source=", *(b"A" * CHUNK for _ in range(10_000))])
    result, stream = read(endless, content_type=URLENCODED)
    assert isinstance(result, ApiError) and result.status == 413
    assert stream.taken <= LIMIT * 4 // 3 + 64 * 1024 + 2 * CHUNK  # the body cap, not 650 MB


def test_urlencoded_oversized_base64_source_is_413() -> None:
    result = form_error([("source", base64.b64encode(b"x" * (LIMIT + 10)))])
    assert result.status == 413


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ([], "Missing 'source'"),
        ([("conf", "0.5")], "Missing 'source'"),
        ([("source", "not base64!")], "Invalid 'source'"),
        ([("file", "x")], "send the image as multipart field 'file'"),
        ([("source", "eA=="), ("file", "x")], "send the image as multipart field 'file'"),
        ([("source", "http://127.0.0.1/x.jpg")], "URL sources are disabled"),
        ([("source", "eA=="), ("conf", "1" * 300)], "longer than 256 bytes"),
        ([("source", "eA=="), *((f"f{i}", "1") for i in range(MAX_FIELDS))], "Too many fields"),
    ],
    ids=[
        "nothing",
        "no-source",
        "bad-base64",
        "file",
        "source-and-file",
        "url-off",
        "long-field",
        "many-fields",
    ],
)
def test_malformed_urlencoded_forms_are_400(fields: list[tuple[str, str]], needle: str) -> None:
    got = form_error(fields)
    assert got.status == 400
    assert needle in got.message


# -- several images, and video ---------------------------------------------------------------
VIDEO_LIMITS = UploadLimits(LIMIT, video_bytes=4 * LIMIT)


def test_several_images_come_in_the_order_sent() -> None:
    got = upload(
        part("file", b"one", "a.jpg"),
        part("source", base64.b64encode(b"two")),
        part("file", b"three"),  # no filename: a text field
        part("conf", b"0.5"),
    )
    assert got.images == [b"one", b"two", b"three"] and got.video is None
    assert got.fields == {"conf": ["0.5"]}


def test_all_the_images_together_are_within_the_image_limit() -> None:
    half = b"x" * (LIMIT // 2 + 1)
    assert error(part("file", half, "a.jpg"), part("file", half, "b.jpg")).status == 413


def test_a_video_is_kept_as_its_spooled_file_up_to_the_video_limit() -> None:
    video = bus_video("mkv", frames=3, size=(160, 120))
    big = video + b"\0" * (2 * LIMIT)  # over the image limit, within the video limit
    got = upload(part("file", big, "v.mkv"), part("vid_stride", b"2"), limits=VIDEO_LIMITS)
    assert got.images == [] and got.video is not None
    assert got.video.read() == big
    asyncio.run(got.close())


def test_a_video_comes_alone_within_its_limit() -> None:
    video = bus_video("mp4", frames=2, size=(160, 120))
    mixed = error(part("file", b"x", "a.jpg"), part("file", video, "v.mp4"), limits=VIDEO_LIMITS)
    assert mixed.status == 400 and "one video per request" in mixed.message
    huge = error(part("file", video + b"\0" * (4 * LIMIT), "v.mp4"), limits=VIDEO_LIMITS)
    assert huge.status == 413


def test_a_route_without_video_says_where_video_goes() -> None:
    video = bus_video("mp4", frames=2, size=(160, 120))
    refused = error(part("file", video, "v.mp4"))
    assert refused.status == 400 and "dedicated endpoints" in refused.message
    as_text = error(part("source", base64.b64encode(video)))
    assert as_text.status == 400 and "dedicated endpoints" in as_text.message
    on_video_route = error(part("source", base64.b64encode(video)), limits=VIDEO_LIMITS)
    assert "not as text" in on_video_route.message


def test_several_images_on_a_video_route_stop_at_the_image_limit_while_read() -> None:
    third = b"x" * (LIMIT // 3 * 2)
    parts = [part("file", third, f"{i}.jpg") for i in range(5)]
    data = body(*parts)
    result, stream = read(chunked(data), length=len(data), limits=VIDEO_LIMITS)
    assert isinstance(result, ApiError) and result.status == 413
    assert stream.taken < 3 * LIMIT  # cut off once the smaller parts passed the image cap

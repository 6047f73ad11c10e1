"""Reading a bounded upload: the size limit is enforced while the body streams in.

Two bodies are accepted. multipart/form-data carries the image as the file part `file`, or as
the text field `source`; application/x-www-form-urlencoded (what the official SDK sends for a
`source` without a `file`) carries only `source`. `source` is base64 (raw or a data URI) or,
only where the config allows it, an http(s) URL fetched under the same size limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from shared.errors import ApiError, bad_request
from shared.limits import body_cap, too_large_message
from shared.url_source import fetch_url, is_url

MAX_FIELDS = 8  # file/source + conf, iou, imgsz, normalize, decimals and a little slack
MAX_FIELD_BYTES = 256  # every text field but `source` is a short number or word
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class UrlSources:
    """Whether `source` may be an http(s) URL, and how long fetching one may take."""

    enabled: bool = False
    timeout_s: float = 10.0


@dataclass
class Upload:
    data: bytes
    fields: dict[str, list[str]]  # every non-image field, repeated ones kept, for parse_params
    received: int  # request body bytes


def too_large(limit: int) -> ApiError:
    return ApiError(413, too_large_message(limit))


class _BoundedParser(MultiPartParser):
    """Keeps the upload in memory and stops at the first file byte past the limit."""

    # The file is at most the limit; don't spool to disk past Starlette's default of 1 MB.
    spool_max_size = 16 * 1024 * 1024

    def __init__(self, *args, file_limit: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.file_limit = file_limit
        self.file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self.file_bytes += end - start
            if self.file_bytes > self.file_limit:
                raise too_large(self.file_limit)
        super().on_part_data(data, start, end)


async def _bounded(
    stream: AsyncIterator[bytes], cap: int, limit: int, counter: list[int]
) -> AsyncIterator[bytes]:
    async for chunk in stream:
        counter[0] += len(chunk)
        if counter[0] > cap:
            raise too_large(limit)
        yield chunk


def _decode_base64(value: str, limit: int) -> bytes:
    text = _DATA_URI.sub("", value.strip(), count=1)
    if len(text) * 3 // 4 > limit:
        raise too_large(limit)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(
            "Invalid 'source': expected a base64 image, a data URI or an http(s) URL"
        ) from exc


async def _from_source(value: str, limit: int, urls: UrlSources) -> bytes:
    if not is_url(value.strip()):
        return _decode_base64(value, limit)
    if not urls.enabled:
        raise bad_request(
            "Invalid 'source': URL sources are disabled on this server; "
            "send the image as 'file' or as base64 'source'"
        )
    return await asyncio.to_thread(
        fetch_url, value.strip(), limit=limit, timeout_s=urls.timeout_s, too_large=too_large(limit)
    )


def _text_as_bytes(value: str) -> bytes:
    # A `file` part sent without a filename arrives as text that Starlette decoded as UTF-8 or,
    # failing that (any JPEG or PNG), Latin-1; undo that to get the bytes back.
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _restore_plus(value: str) -> str:
    # A client that did not percent-encode its base64 (curl -d) sends '+' raw, which form
    # decoding turns into ' '; base64 never holds a space, so turning it back loses nothing.
    return value if is_url(value.strip()) else value.replace(" ", "+")


def _media_type(request: Request) -> str:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in (MULTIPART, URLENCODED):
        raise bad_request(
            f"Expected {MULTIPART} with the image in a 'file' field, "
            f"or {URLENCODED} with a base64 'source'"
        )
    return media_type


async def _parse_form(
    media_type: str, headers: Headers, stream: AsyncIterator[bytes], limit: int
) -> FormData:
    cap = body_cap(limit)
    parser: FormParser | _BoundedParser
    if media_type == URLENCODED:
        parser = FormParser(headers, stream, max_fields=MAX_FIELDS, max_part_size=cap)
    else:
        parser = _BoundedParser(
            headers, stream, max_files=1, max_fields=MAX_FIELDS, max_part_size=cap, file_limit=limit
        )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"Invalid form data: {exc.message}") from exc


def _split_form(form: FormData) -> tuple[list[tuple[str, UploadFile]], dict[str, list[str]]]:
    """The file parts, and the text fields by name (checked for length but `source`/`file`)."""
    files: list[tuple[str, UploadFile]] = []
    fields: dict[str, list[str]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((name, value))
        else:
            fields.setdefault(name, []).append(value)
    for name, values in fields.items():
        if name not in ("source", "file") and any(len(v) > MAX_FIELD_BYTES for v in values):
            raise bad_request(f"Invalid '{name[:32]}': longer than {MAX_FIELD_BYTES} bytes")
    images = len(files) + len(fields.get("file", [])) + len(fields.get("source", []))
    if images > 1:
        raise bad_request("Send one image: a single 'file' or a single 'source'")
    return files, fields


async def _multipart_image(
    files: list[tuple[str, UploadFile]], fields: dict[str, list[str]], limit: int, urls: UrlSources
) -> bytes:
    if files:
        name, upload = files[0]
        if name != "file":
            raise bad_request(f"Unexpected file field '{name[:32]}': send the image as 'file'")
        return await upload.read()
    if "file" in fields:
        return _text_as_bytes(fields.pop("file")[0])
    if "source" in fields:
        return await _from_source(fields.pop("source")[0], limit, urls)
    raise bad_request("Missing 'file': attach the image as multipart field 'file'")


async def _urlencoded_image(fields: dict[str, list[str]], limit: int, urls: UrlSources) -> bytes:
    # Form-urlencoded text cannot carry binary bytes faithfully: only base64 `source` here.
    if "file" in fields:
        raise bad_request(
            f"Unexpected field 'file' in a {URLENCODED} body: send the image as multipart "
            "field 'file', or as base64 'source'"
        )
    if "source" in fields:
        return await _from_source(_restore_plus(fields.pop("source")[0]), limit, urls)
    raise bad_request(
        "Missing 'source': send the image as base64 'source', or as multipart field 'file'"
    )


async def read_upload(request: Request, limit: int, urls: UrlSources | None = None) -> Upload:
    """Parse `file` (or `source`) and the form fields, never buffering much past `limit`."""
    urls = urls or UrlSources()
    media_type = _media_type(request)
    cap = body_cap(limit)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise too_large(limit)
    counter = [0]
    stream = _bounded(request.stream(), cap, limit, counter)
    form = await _parse_form(media_type, request.headers, stream, limit)
    try:
        files, fields = _split_form(form)
        if media_type == URLENCODED:
            data = await _urlencoded_image(fields, limit, urls)
        else:
            data = await _multipart_image(files, fields, limit, urls)
    finally:
        await form.close()
    if len(data) > limit:
        raise too_large(limit)
    return Upload(data=data, fields=fields, received=counter[0])

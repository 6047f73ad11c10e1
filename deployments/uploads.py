"""Reading a bounded multipart upload: the size limit is enforced while the body streams in."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from shared.errors import ApiError, bad_request

MAX_FIELDS = 8  # file/source + conf, iou, imgsz, normalize, decimals and a little slack
_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


class _InMemoryParser(MultiPartParser):
    # Keep uploads (at most the size limit) in memory instead of spooling >1 MB to disk.
    spool_max_size = 16 * 1024 * 1024


@dataclass
class Upload:
    data: bytes
    fields: dict[str, list[str]]  # every non-file field, repeated ones kept, for parse_params
    received: int  # request body bytes


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"File too large: the limit is {limit // (1024 * 1024)} MB")


async def _bounded(
    stream: AsyncIterator[bytes], cap: int, limit: int, counter: list[int]
) -> AsyncIterator[bytes]:
    async for chunk in stream:
        counter[0] += len(chunk)
        if counter[0] > cap:
            raise too_large(limit)
        yield chunk


def _decode_source(value: str, limit: int) -> bytes:
    text = _DATA_URI.sub("", value.strip(), count=1)
    if len(text) * 3 // 4 > limit:
        raise too_large(limit)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request("Invalid 'source': expected a base64 image or data URI") from exc


async def read_upload(request: Request, limit: int) -> Upload:
    """Parse `file` (or base64 `source`) and the form fields, never buffering much past `limit`."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise bad_request("Expected multipart/form-data with a 'file' field")
    # Envelope allowance: base64 `source` is 4/3 of the image, plus headers and small fields.
    cap = limit * 4 // 3 + 64 * 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise too_large(limit)
    counter = [0]
    parser = _InMemoryParser(
        request.headers,
        _bounded(request.stream(), cap, limit, counter),
        max_files=1,
        max_fields=MAX_FIELDS,
        max_part_size=cap,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"Invalid form data: {exc.message}") from exc
    files: list[tuple[str, UploadFile]] = []
    fields: dict[str, list[str]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.append((name, value))
        else:
            fields.setdefault(name, []).append(value)
    try:
        if files:
            name, upload = files[0]
            if name != "file":
                raise bad_request(f"Unexpected file field '{name}': send the image as 'file'")
            if "source" in fields:
                raise bad_request("Send either 'file' or 'source', not both")
            data = await upload.read()
        elif "source" in fields:
            sources = fields.pop("source")
            if len(sources) > 1:
                raise bad_request("Parameter 'source' was given more than once")
            data = _decode_source(sources[0], limit)
        else:
            raise bad_request("Missing 'file': attach the image as multipart field 'file'")
    finally:
        await form.close()
    if len(data) > limit:
        raise too_large(limit)
    return Upload(data=data, fields=fields, received=counter[0])

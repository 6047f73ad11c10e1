"""Reading a bounded upload: the size limits are enforced while the body streams in.

Two bodies are accepted. multipart/form-data carries each image as a file part `file`, or as
a text field `source`; application/x-www-form-urlencoded (what the official SDK sends for a
`source` without a `file`) carries only `source`. `source` is base64 (raw or a data URI) or,
only where the config allows it, an http(s) URL fetched under the same size limit.

Up to MAX_IMAGES images come in one request, in the order sent, all of them together within
the image limit. On routes that take video (dedicated endpoints), a `file` part whose first
bytes announce a video container is kept as its spooled file (memory, then disk), never read
into memory: it may be up to the video limit, and comes alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from shared.errors import ApiError, bad_request
from shared.limits import body_cap, too_large_message
from shared.url_source import fetch_url, is_url
from shared.video import sniff_video

MAX_IMAGES = 16  # images in one request: each is its own `images[]` entry
# The parameters (conf, iou, imgsz, normalize, decimals, vid_stride, bits) and a little slack,
# beside up to MAX_IMAGES images sent as text (`source`, or `file` without a filename).
MAX_FIELDS = 8 + MAX_IMAGES
SNIFF_BYTES = 512  # what tells a video container from an image
ONE_VIDEO = "Send one video per request, without images beside it"
MAX_FIELD_BYTES = 256  # every text field but `source` is a short number or word
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
_DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class UrlSources:
    """Whether `source` may be an http(s) URL, and how long fetching one may take."""

    enabled: bool = False
    timeout_s: float = 10.0


@dataclass(frozen=True)
class UploadLimits:
    """What one predict request may carry."""

    image_bytes: int  # every image together (a single image's limit, for one)
    video_bytes: int | None = None  # one video's limit; None: this route takes no video
    max_images: int = MAX_IMAGES

    def body_limit(self) -> int:
        return max(self.image_bytes, self.video_bytes or 0)

    def body_cap(self) -> int:
        return body_cap(self.body_limit())


@dataclass
class Upload:
    images: list[bytes]  # in the order sent; empty when a video came
    video: BinaryIO | None  # the spooled video file (memory, then disk past 16 MB), or None
    fields: dict[str, list[str]]  # every non-image field, repeated ones kept, for parse_params
    received: int  # request body bytes
    form: FormData | None = None  # what holds the spooled files until close()

    @property
    def data(self) -> bytes:
        """The one image of a single-image request."""
        return self.images[0]

    async def close(self) -> None:
        if self.form is not None:
            await self.form.close()


def too_large(limit: int) -> ApiError:
    return ApiError(413, too_large_message(limit))


class _BoundedParser(MultiPartParser):
    """Keeps the upload in memory (a file past 16 MB on disk) and stops at the first byte past
    a limit: every file together within `file_limit`, and every part but the largest (which
    may be a video) within the images' cap, so several images never take a video's room."""

    spool_max_size = 16 * 1024 * 1024

    def __init__(self, *args, file_limit: int, image_limit: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.file_limit = file_limit
        self.image_limit = image_limit
        self.others_limit = body_cap(image_limit)  # base64 `source` fields are 4/3
        self.file_bytes = 0
        self.total = 0  # bytes of every part so far
        self.part = 0  # of the current part
        self.largest = 0  # the largest finished part

    def on_part_begin(self) -> None:
        self.part = 0
        super().on_part_begin()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        self.part += size
        self.total += size
        if self._current_part.file is not None:
            self.file_bytes += size
            if self.file_bytes > self.file_limit:
                raise too_large(self.file_limit)
        if self.total - max(self.largest, self.part) > self.others_limit:
            raise too_large(self.image_limit)
        super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        self.largest = max(self.largest, self.part)
        super().on_part_end()


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
    media_type: str, headers: Headers, stream: AsyncIterator[bytes], limits: UploadLimits
) -> FormData:
    # A text field (base64 `source`) holds images only, never a video: the image cap.
    cap = body_cap(limits.image_bytes)
    parser: FormParser | _BoundedParser
    if media_type == URLENCODED:
        parser = FormParser(headers, stream, max_fields=MAX_FIELDS, max_part_size=cap)
    else:
        parser = _BoundedParser(
            headers,
            stream,
            max_files=limits.max_images,
            max_fields=MAX_FIELDS,
            max_part_size=cap,
            file_limit=limits.body_limit(),
            image_limit=limits.image_bytes,
        )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):
            raise bad_request(f"Too many images: at most {limits.max_images} per request") from exc
        raise bad_request(f"Invalid form data: {exc.message}") from exc


def _checked_fields(fields: dict[str, list[str]]) -> None:
    for name, values in fields.items():
        if any(len(v) > MAX_FIELD_BYTES for v in values):
            raise bad_request(f"Invalid '{name[:32]}': longer than {MAX_FIELD_BYTES} bytes")


async def _multipart_parts(
    form: FormData, limits: UploadLimits, urls: UrlSources
) -> tuple[list[bytes], BinaryIO | None, dict[str, list[str]]]:
    """The images in the order sent, the video (a spooled file) if one came instead, and the
    text fields."""
    images: list[bytes] = []
    video: BinaryIO | None = None
    fields: dict[str, list[str]] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != "file":
                raise bad_request(f"Unexpected file field '{name[:32]}': send the image as 'file'")
            head = await value.read(SNIFF_BYTES)
            await value.seek(0)
            if sniff_video(head) is not None:
                video = _video_part(value, limits, images or video)
                continue
            if (value.size or 0) > limits.image_bytes:
                raise too_large(limits.image_bytes)  # before reading it into memory
            images.append(await value.read())
        elif name == "file":
            images.append(_not_video(_text_as_bytes(value), limits))
        elif name == "source":
            images.append(_not_video(await _from_source(value, limits.image_bytes, urls), limits))
        else:
            fields.setdefault(name, []).append(value)
        if video is not None and images:
            raise bad_request(ONE_VIDEO)
    _checked_fields(fields)
    if not images and video is None:
        raise bad_request("Missing 'file': attach the image as multipart field 'file'")
    return images, video, fields


def _no_video_here() -> ApiError:
    return bad_request(
        "Video is supported on dedicated endpoints: deploy this model and send the video to "
        "its /predict, or send the frames as images here"
    )


def _not_video(data: bytes, limits: UploadLimits) -> bytes:
    """An image sent as text; a video that way is refused (it would sit whole in memory)."""
    if sniff_video(data[:SNIFF_BYTES]) is None:
        return data
    if limits.video_bytes is None:
        raise _no_video_here()
    raise bad_request("Send a video as the multipart file part 'file', not as text")


def _video_part(value: UploadFile, limits: UploadLimits, others: object) -> BinaryIO:
    if limits.video_bytes is None:
        raise _no_video_here()
    if others:
        raise bad_request(ONE_VIDEO)
    if (value.size or 0) > limits.video_bytes:
        raise too_large(limits.video_bytes)
    return value.file


async def _urlencoded_images(
    fields: dict[str, list[str]], limits: UploadLimits, urls: UrlSources
) -> list[bytes]:
    # Form-urlencoded text cannot carry binary bytes faithfully: only base64 `source` here.
    if "file" in fields:
        raise bad_request(
            f"Unexpected field 'file' in a {URLENCODED} body: send the image as multipart "
            "field 'file', or as base64 'source'"
        )
    if "source" in fields:
        sources = fields.pop("source")
        return [
            _not_video(await _from_source(_restore_plus(v), limits.image_bytes, urls), limits)
            for v in sources
        ]
    raise bad_request(
        "Missing 'source': send the image as base64 'source', or as multipart field 'file'"
    )


async def read_upload(
    request: Request, limits: UploadLimits | int, urls: UrlSources | None = None
) -> Upload:
    """Parse the images (or one video) and the form fields, never buffering much past the
    limits. The caller closes the upload: a video stays spooled until then."""
    limits = limits if isinstance(limits, UploadLimits) else UploadLimits(limits)
    urls = urls or UrlSources()
    media_type = _media_type(request)
    if media_type == URLENCODED:  # text: images only, never a video
        limits = dataclasses.replace(limits, video_bytes=None)
    cap = limits.body_cap()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise too_large(limits.body_limit())
    counter = [0]
    stream = _bounded(request.stream(), cap, limits.body_limit(), counter)
    form = await _parse_form(media_type, request.headers, stream, limits)
    try:
        if media_type == URLENCODED:
            fields = {}
            for name, value in form.multi_items():
                fields.setdefault(name, []).append(str(value))
            images, video = await _urlencoded_images(fields, limits, urls), None
            _checked_fields(fields)
        else:
            images, video, fields = await _multipart_parts(form, limits, urls)
        if len(images) > limits.max_images:
            raise bad_request(
                f"Too many images: {len(images)} sent, at most {limits.max_images} per request"
            )
        if sum(map(len, images)) > limits.image_bytes:
            raise too_large(limits.image_bytes)
    except BaseException:
        await form.close()
        raise
    return Upload(images=images, video=video, fields=fields, received=counter[0], form=form)

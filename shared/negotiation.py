"""What a predict response is sent as, from the request's `Accept` header.

JSON stays the default: no header, `*/*`, `application/*` and a browser's navigation (whose
Accept lists text/html, and image/webp beside it for the page's images) get it, so Platform
clients see no change. `application/x-ndjson` streams one JSON line per
image (or video frame) as each is ready, then a line holding `metadata`. An image type gets
the input image back with its results drawn on it (`image/*` means JPEG).
"""

from __future__ import annotations

from typing import Literal

from shared.errors import ApiError

Output = Literal[
    "application/json", "application/x-ndjson", "image/jpeg", "image/png", "image/webp"
]
JSON: Output = "application/json"
NDJSON: Output = "application/x-ndjson"
IMAGE_OUTPUTS: tuple[Output, ...] = ("image/jpeg", "image/png", "image/webp")
_OFFERED: dict[str, Output] = {
    JSON: JSON,
    NDJSON: NDJSON,
    "image/jpeg": "image/jpeg",
    "image/png": "image/png",
    "image/webp": "image/webp",
    "*/*": JSON,
    "application/*": JSON,
    "image/*": "image/jpeg",
}
MAX_ACCEPT_ITEMS = 32  # more is no real client; bounded work either way


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def negotiate(accept: str | None) -> Output:
    """The offered output the client prefers most (the first listed among equals), or a 406."""
    if not accept or not accept.strip() or "text/html" in accept.lower():
        return JSON
    best: tuple[float, int, Output] | None = None
    for position, item in enumerate(accept.split(",")[:MAX_ACCEPT_ITEMS]):
        media_type, *params = item.split(";")
        output = _OFFERED.get(media_type.strip().lower())
        q = _quality(params)
        if output is None or q <= 0:
            continue
        if best is None or q > best[0]:
            best = (q, position, output)
    if best is None:
        raise ApiError(
            406,
            "Not acceptable: predictions are sent as application/json (the default), "
            "application/x-ndjson, or an annotated image/jpeg, image/png or image/webp",
        )
    return best[2]

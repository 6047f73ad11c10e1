"""The upload limit as the proxy's edge guard and the ingress's upload reader both count it."""

from __future__ import annotations

MB = 1024 * 1024


def body_cap(limit: int) -> int:
    """The most request body bytes an upload of at most `limit` bytes may take.

    Envelope allowance: base64 `source` is 4/3 of the image, plus headers and small fields.
    """
    return limit * 4 // 3 + 64 * 1024


def too_large_message(limit: int) -> str:
    return f"File too large: the limit is {limit / MB:g} MB"

"""The one error type every layer raises; the ingress turns it into `{"error": ...}` JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.holds import Hold


class ApiError(Exception):
    """An error whose message is safe to show to the client, with its HTTP status.

    `hold`: the same answer holds for this key on this route for a while (shared/holds.py).
    """

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        hold: Hold | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.hold = hold


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)

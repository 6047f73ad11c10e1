"""The one error type every layer raises; the ingress turns it into `{"error": ...}` JSON."""

from __future__ import annotations


class ApiError(Exception):
    """An error whose message is safe to show to the client, with its HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)

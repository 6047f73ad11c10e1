"""Accept -> what a predict answer is sent as: JSON unless the client asks otherwise."""

from __future__ import annotations

import pytest

from shared.errors import ApiError
from shared.negotiation import negotiate


@pytest.mark.parametrize(
    ("accept", "output"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        # Chromium's Accept for a navigation (a form posted to the URL): JSON, not its webp.
        (
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
            "image/apng,*/*;q=0.8",
            "application/json",
        ),
        ("application/x-ndjson", "application/x-ndjson"),
        ("image/jpeg", "image/jpeg"),
        ("IMAGE/PNG", "image/png"),
        ("image/*", "image/jpeg"),
        ("image/png;q=0.5, application/json", "application/json"),
        ("image/png, image/webp", "image/png"),  # equal quality: the first listed
        ("image/jpeg;q=0, */*", "application/json"),
    ],
)
def test_negotiated(accept: str | None, output: str) -> None:
    assert negotiate(accept) == output


@pytest.mark.parametrize("accept", ["text/plain", "image/gif", "image/jpeg;q=0", "image/png;q=x"])
def test_nothing_offered_is_a_406(accept: str) -> None:
    with pytest.raises(ApiError) as refused:
        negotiate(accept)
    assert refused.value.status == 406 and "application/json" in refused.value.message

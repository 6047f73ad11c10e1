"""CORS allow-list entries: accepted only as a browser would send them in `Origin`."""

from __future__ import annotations

import pytest

from shared.origins import parse_origin, parse_origins


@pytest.mark.parametrize(
    "origin",
    ["https://app.example", "http://localhost:3000", "https://[::1]:8443", "*"],
)
def test_accepts_exact_origins(origin: str) -> None:
    assert parse_origin(origin) == origin


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("https://app.example/", "no path"),
        ("https://app.example/x", "no path"),
        ("app.example", "scheme://host"),
        ("ftp://app.example", "scheme://host"),
        ("https://App.Example", "https://app.example"),
        ("https://app.example:443", "https://app.example"),
        ("https://user@app.example", "no path or user"),
        ("https://app.example:99999", "invalid port"),
        ("https://app.example?x=1", "no path"),
        ("null", "scheme://host"),
    ],
)
def test_rejects_what_would_never_match(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("?", r"\?")):
        parse_origin(value)


def test_star_stands_alone() -> None:
    assert parse_origins(["*"]) == ["*"]
    with pytest.raises(ValueError, match="alone"):
        parse_origins(["*", "https://app.example"])

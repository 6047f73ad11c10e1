"""The Predict page's serving and shipped files, without Ray or a browser.

The browser tests (tests/test_predict_page.py) show the page working; these pin down what the
strict CSP and the two mount points demand of the files themselves.
"""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser

import pytest
from starlette.applications import Starlette

from deployments.pages import CSP, STATIC_DIR, UPLOAD_FORMATS, PredictPages, render_page
from shared.errors import ApiError


def get(app: Starlette, path: str, root_path: str = "") -> tuple[int, dict[str, str], bytes]:
    """One GET through the ASGI app, as Serve's proxy sends it (full path plus root_path)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    sent: list[dict] = []
    requested = False

    async def receive() -> dict:
        # The body once; then the client stays connected while the response streams.
        nonlocal requested
        if requested:
            await asyncio.sleep(3600)  # the client stays connected; the response ends the call
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, body


def app_for(mode: str) -> Starlette:
    pages = PredictPages(mode, endpoint="yolo26n", model="yolo26n", max_upload_mb=10)
    return Starlette(routes=pages.routes())


@pytest.mark.parametrize("root_path", ["", "/endpoints/yolo26n"])
def test_page_assets_and_examples_are_served_with_the_csp(root_path: str) -> None:
    app = app_for("dedicated" if root_path else "shared")
    for path, content_type in [
        ("/", "text/html; charset=utf-8"),
        ("/static/app.js", "text/javascript; charset=utf-8"),
        ("/static/overlay.js", "text/javascript; charset=utf-8"),
        ("/static/style.css", "text/css; charset=utf-8"),
        ("/static/favicon.svg", "image/svg+xml"),
        ("/examples/bus.jpg", "image/jpeg"),
        ("/examples/zidane.jpg", "image/jpeg"),
    ]:
        status, headers, body = get(app, path, root_path)
        assert status == 200, path
        assert headers["content-type"] == content_type, path
        assert headers["content-security-policy"] == CSP
        assert headers["x-content-type-options"] == "nosniff"
        assert body


def test_bare_endpoint_path_redirects_to_the_slash_form() -> None:
    status, headers, _ = get(app_for("dedicated"), "", "/endpoints/yolo26n")
    assert status in (301, 302, 307, 308)
    assert headers["location"].endswith("/endpoints/yolo26n/")


@pytest.mark.parametrize(
    "path",
    ["/static/index.html", "/static/../pages.py", "/static/nope.js", "/examples/../app.py"],
)
def test_only_the_shipped_assets_are_reachable(path: str) -> None:
    # The handlers raise ApiError (the ingress turns it into JSON); the router 404s the rest.
    try:
        status, _, _ = get(app_for("shared"), path)
    except ApiError as exc:
        status = exc.status
    assert status == 404


def test_page_values_are_escaped_into_data_attributes() -> None:
    html = render_page(
        '<main data-endpoint="__ENDPOINT__" data-formats="__FORMATS__">__TITLE__</main>',
        mode="dedicated",
        endpoint='x"><script>alert(1)</script>',
        model="m",
        max_upload_mb=10,
    )
    assert "<script>" not in html
    formats = re.search(r'data-formats="([^"]*)"', html)
    assert formats is not None
    assert json.loads(formats.group(1).replace("&quot;", '"')) == UPLOAD_FORMATS


class _InlineFinder(HTMLParser):
    """Everything in a page that a `script-src 'self'; style-src 'self'` CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names:
            self._in_script_without_src = True
            self.blocked.append("inline <script>")
        if tag == "style":
            self.blocked.append("inline <style>")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.blocked.append(f"{tag} {name}=")
            if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                self.blocked.append(f"{tag} {name}={value} (off-site)")


def test_the_page_has_nothing_the_csp_blocks_and_uses_only_relative_urls() -> None:
    finder = _InlineFinder()
    finder.feed((STATIC_DIR / "index.html").read_text())
    assert finder.blocked == []
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
        # Absolute paths would break under /endpoints/{name}/.
        assert not re.search(r"""(src|href|fetch\(|requestJson\()\s*=?\s*["'`]/""", text), path.name
        assert "eval(" not in text and "new Function" not in text, path.name


def test_overlay_colours_and_skeleton_are_ultralytics_own() -> None:
    import numpy as np
    from ultralytics.utils.plotting import Annotator, Colors

    source = (STATIC_DIR / "overlay.js").read_text()
    palette = re.search(r"export const PALETTE = \[(.*?)\];", source, re.S)
    assert palette is not None
    hexes = re.findall(r'"#([0-9a-f]{6})"', palette.group(1))
    colors = Colors()
    assert [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in hexes] == colors.palette

    annotator = Annotator(np.zeros((8, 8, 3), dtype=np.uint8))
    skeleton = re.search(r"const SKELETON = \[(.*?)\];", source, re.S)
    assert skeleton is not None
    pairs = [[int(a), int(b)] for a, b in re.findall(r"\[(\d+), (\d+)\]", skeleton.group(1))]
    assert pairs == annotator.skeleton

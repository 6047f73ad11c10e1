"""The Predict page: its HTML, static assets and example images, served by the ingress.

Everything the page needs ships in `deployments/static/` and is served from the app's own origin,
so the strict CSP below holds: no inline scripts or styles, no CDN, no network but this service.
The page uses relative URLs only, which is what lets the same files work at `/` (shared service)
and at `/endpoints/{name}/` (a dedicated endpoint mounted by Serve under its route prefix).
"""

from __future__ import annotations

import html
import json
import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from shared.assets import EXAMPLES, example_image
from shared.errors import ApiError
from shared.settings import DEFAULT_MAX_UPLOAD_MB, DEFAULT_MAX_VIDEO_MB

STATIC_DIR = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The page is tiny and changes with each deploy; revalidating beats a stale script after upgrade.
_REVALIDATE = "no-cache"
_EXAMPLE_CACHE = "public, max-age=86400"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Upload formats the API decodes (the spec's list), shown on the page and checked before upload.
UPLOAD_FORMATS = {
    "JPEG": [".jpg", ".jpeg", ".jfif"],
    "PNG": [".png"],
    "WebP": [".webp"],
    "AVIF": [".avif"],
    "HEIC": [".heic", ".heif"],
    "JP2": [".jp2", ".j2k", ".jpx"],
    "TIFF": [".tif", ".tiff"],
    "BMP": [".bmp"],
    "DNG": [".dng"],
    "MPO": [".mpo"],
}


def _not_found() -> ApiError:
    return ApiError(404, "Not found")


def _static_files() -> dict[str, Path]:
    """Every servable asset by its URL name: a fixed set read once, so no path ever escapes."""
    return {
        p.relative_to(STATIC_DIR).as_posix(): p
        for p in STATIC_DIR.rglob("*")
        if p.is_file() and p.suffix in _TYPES and p.name != "index.html"
    }


def render_page(
    template: str,
    *,
    mode: str,
    endpoint: str | None,
    model: str | None,
    max_upload_mb: float,
    max_video_mb: float = DEFAULT_MAX_VIDEO_MB,
) -> str:
    """Fill the page's data attributes: the only per-app values, so the JS needs no inline code."""
    title = f"{endpoint} · Predict · YOLO Endpoints" if endpoint else "Predict · YOLO Endpoints"
    values = {
        "__TITLE__": title,
        "__MODE__": mode,
        "__ENDPOINT__": endpoint or "",
        "__MODEL__": model or "",
        "__MAX_MB__": f"{max_upload_mb:g}",
        "__MAX_VIDEO_MB__": f"{max_video_mb:g}",
        "__FORMATS__": json.dumps(UPLOAD_FORMATS, separators=(",", ":")),
        "__FORMAT_NAMES__": ", ".join(UPLOAD_FORMATS),
    }
    for placeholder, value in values.items():
        template = template.replace(placeholder, html.escape(value, quote=True))
    return template


class PredictPages:
    """The page routes of one ingress app: `shared` or `dedicated`."""

    def __init__(
        self,
        mode: str,
        *,
        endpoint: str | None = None,
        model: str | None = None,
        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
        max_video_mb: float = DEFAULT_MAX_VIDEO_MB,
    ):
        self.files = _static_files()
        self.html = render_page(
            (STATIC_DIR / "index.html").read_text(encoding="utf-8"),
            mode=mode,
            endpoint=endpoint,
            model=model,
            max_upload_mb=max_upload_mb,
            max_video_mb=max_video_mb,
        )

    def routes(self) -> list[Route]:
        # A page for people, not part of the API: /openapi.json leaves them out.
        return [
            Route(path, endpoint, methods=["GET"], include_in_schema=False)
            for path, endpoint in (
                ("/", self.page),
                ("/static/{path:path}", self.asset),
                ("/examples/{name}", self.example),
            )
        ]

    async def page(self, request: Request) -> Response:
        # `/endpoints/x` (no slash) reaches the app as the empty route path, which matches no
        # route, so Starlette's redirect_slashes sends the browser to `/endpoints/x/`: the form
        # under which the page's relative URLs resolve. tests/test_predict_page.py checks it.
        headers = {**SECURITY_HEADERS, "Cache-Control": _REVALIDATE}
        return HTMLResponse(self.html, headers=headers)

    async def asset(self, request: Request) -> Response:
        path = self.files.get(request.path_params["path"])
        if path is None:
            raise _not_found()
        headers = {**SECURITY_HEADERS, "Cache-Control": _REVALIDATE}
        return FileResponse(path, media_type=_TYPES[path.suffix], headers=headers)

    async def example(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in EXAMPLES:
            raise _not_found()
        path = example_image(name)
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        headers = {**SECURITY_HEADERS, "Cache-Control": _EXAMPLE_CACHE}
        return FileResponse(path, media_type=media_type, headers=headers)

"""The web UI: one HTML page and its static files, served with a Content-Security-Policy that allows
no inline script and nothing from other origins (the vendored libraries are served from here)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.api.errors import ApiError

STATIC = Path(__file__).parent / "static"
# No inline script or style, nothing remote; images only from here (uploads) or blobs/data (previews).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".md": "text/markdown"}


async def index(request: web.Request) -> web.StreamResponse:
    """The web UI (log in, chat)."""
    body = (STATIC / "index.html").read_bytes()
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


async def static(request: web.Request) -> web.StreamResponse:
    """A file of the UI; vendored libraries carry their version in the name and are cached for good."""
    name = request.match_info["path"]
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in _TYPES:
        raise ApiError(404, "not_found", f"no file {name}")
    cache = "public, max-age=31536000, immutable" if name.startswith("vendor/") else "no-cache"
    return web.Response(
        body=path.read_bytes(),
        content_type=_TYPES[path.suffix],
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": cache},
    )

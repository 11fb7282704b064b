"""Static files on the WebSocket port: directories the adapter names (e.g. a demo page and the
client library it imports), served read-only under a URL path.

Serving them from the stack itself (rather than a second server or a CDN) keeps `make dev` one
command and puts the page on the same origin as the control API, so the page can mint tokens and
drop connections without CORS. For development only: no caching (an edit shows on reload), no
directory listings, nothing outside the directory (no `..`, no symlinks leading out of it).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

# Browsers refuse ES modules served with a non-JavaScript type; the platform's mimetypes table
# may lack .mjs or map .js to something old, so the types of what a web page needs are fixed here.
_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".json": "application/json", ".map": "application/json",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain",
    ".md": "text/markdown", ".ts": "text/plain", ".webmanifest": "application/manifest+json",
}


def content_type(path: Path) -> str:
    return _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class StaticDir:
    """One directory served under `prefix` (`/client` serves DIR/x at /client/x)."""

    def __init__(self, prefix: str, directory: Path) -> None:
        if not prefix.startswith("/") or prefix.endswith("/") or prefix == "/":
            raise ValueError(f"static prefix must look like /name, not {prefix!r}")
        self.prefix = prefix
        self.directory = directory.resolve()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.prefix, self._redirect)
        app.router.add_get(self.prefix + "/{path:.*}", self._serve)

    def resolve(self, relative: str) -> Path | None:
        """The file a request path names, or None when it is missing or outside the directory.
        A directory stands for its index.html."""
        if any(part in ("..", "") for part in relative.split("/")[:-1]) or "\\" in relative or "\0" in relative:
            return None
        target = (self.directory / relative).resolve()
        if target != self.directory and self.directory not in target.parents:
            return None
        if target.is_dir():
            target = target / "index.html"
        return target if target.is_file() else None

    async def _redirect(self, _: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(self.prefix + "/")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        target = self.resolve(relative)
        if target is None:
            return web.json_response({"message": "Not Found"}, status=404)
        if (self.directory / relative).is_dir() and relative and not relative.endswith("/"):
            # Relative URLs in the index (./demo.js, ../herald.js) resolve against the slash.
            raise web.HTTPFound(f"{self.prefix}/{relative}/")
        return web.FileResponse(target, headers={
            "Content-Type": content_type(target),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        })

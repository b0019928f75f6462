"""The pages a person opens: the live directory (the index), the watch page, the scripts they
load (hls.js, watch.js, directory.js, and the page scripts of the plugins that run, such as
the chat pane) and the stream thumbnails the directory shows (thumbnails.py makes them)."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from mediacore.origin.api import stream_state
from mediacore.origin.http import not_found, not_yet, state_of, stream_name
from mediacore.playlist.uris import STREAM_ROOT, THUMBNAIL, WATCH_PAGE

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_MAX_AGE = 86400
"""Seconds browsers may keep hls.js: it changes only with an install."""
STATIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(js|css)")
"""Names served from web/static/ (no dots but the extension, no slashes: no way out of it)."""
PLUGIN_SCRIPTS = "/static/plugins/"
"""Where the running plugins' page scripts are served; the watch page loads each of them, so
a page without a plugin makes no request for its script."""
JPEG_TYPE = "image/jpeg"


async def watch(request: web.Request) -> web.StreamResponse:
    name = stream_name(request)
    scripts = "".join(
        f'<script src="{PLUGIN_SCRIPTS}{script}" defer></script>\n' for script in sorted(state_of(request).page_scripts)
    )
    html = (WEB_DIR / "watch.html").read_text().replace("{{STREAM}}", name).replace("{{PLUGIN_SCRIPTS}}", scripts)
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    items = "".join(
        f'<li><a href="{WATCH_PAGE.format(stream=n)}">{n}</a>'
        f" ({stream_state(s.publishing, s.ended, n in state.failed)})</li>"
        for n, s in sorted(state.streams.items())
    )
    html = (WEB_DIR / "index.html").read_text().replace("{{STREAMS}}", items or "<li>no streams yet</li>")
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def thumbnail(request: web.Request) -> web.StreamResponse:
    """The stream's newest keyframe as a JPEG, cached for `[http] thumbnail_interval`; 404
    no-store before its first keyframe. Not counted as a viewer."""
    state = state_of(request)
    name = stream_name(request)
    if name not in state.streams:
        raise not_found("no such stream")
    found = await state.thumbnails.get(name) if state.thumbnails is not None else None
    if found is None:
        raise not_yet(f"stream {name} has no picture yet")
    jpeg, max_age = found
    return web.Response(body=jpeg, content_type=JPEG_TYPE, headers={"Cache-Control": f"public, max-age={max_age}"})


async def hls_js(request: web.Request) -> web.StreamResponse:
    path = WEB_DIR / "static" / "hls.min.js"
    if not path.exists():
        raise web.HTTPServiceUnavailable(text="hls.js is not installed: run `make install`")
    return web.FileResponse(path, headers={"Cache-Control": f"public, max-age={STATIC_MAX_AGE}"})


async def plugin_script(request: web.Request) -> web.StreamResponse:
    """A running plugin's page script: revalidated on each load (it changes with the plugin)."""
    path = state_of(request).page_scripts.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache", "Content-Type": "text/javascript"})


async def static_file(request: web.Request) -> web.StreamResponse:
    """watch.js: revalidated on each load (it changes with the tree, not an install)."""
    name = request.match_info["name"]
    path = WEB_DIR / "static" / name
    if not STATIC_NAME.fullmatch(name) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def add_routes(app: web.Application) -> None:
    app.router.add_get(WATCH_PAGE, watch)
    app.router.add_get("/static/hls.min.js", hls_js)
    app.router.add_get(PLUGIN_SCRIPTS + "{name}", plugin_script)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/", index)
    app.router.add_get(STREAM_ROOT + THUMBNAIL, thumbnail)

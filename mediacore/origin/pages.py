"""The pages a person opens: the stream index, the watch page and the hls.js it loads."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from mediacore.origin.api import stream_state
from mediacore.origin.http import state_of, stream_name
from mediacore.playlist.uris import WATCH_PAGE

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC_MAX_AGE = 86400
"""Seconds browsers may keep hls.js: it changes only with an install."""


async def watch(request: web.Request) -> web.StreamResponse:
    name = stream_name(request)
    html = (WEB_DIR / "watch.html").read_text().replace("{{STREAM}}", name)
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


async def hls_js(request: web.Request) -> web.StreamResponse:
    path = WEB_DIR / "static" / "hls.min.js"
    if not path.exists():
        raise web.HTTPServiceUnavailable(text="hls.js is not installed: run `make install`")
    return web.FileResponse(path, headers={"Cache-Control": f"public, max-age={STATIC_MAX_AGE}"})


async def chat_js(request: web.Request) -> web.StreamResponse:
    """The chat pane (plugins/chat's client): no-cache, it changes with the plugin."""
    path = WEB_DIR / "static" / "chat.js"
    if not path.exists():
        raise web.HTTPNotFound(text="chat.js is not installed")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache", "Content-Type": "text/javascript"})


def add_routes(app: web.Application) -> None:
    app.router.add_get(WATCH_PAGE, watch)
    app.router.add_get("/static/hls.min.js", hls_js)
    app.router.add_get("/static/chat.js", chat_js)
    app.router.add_get("/", index)

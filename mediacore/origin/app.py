"""HTTP origin (aiohttp).

Headers follow HLS-RULES.md: playlists as application/vnd.apple.mpegurl (P1), gzip when
the client accepts it (S6.2.1), Cache-Control max-age TD/2 for live playlists (B.1 table);
segments as video/mp2t, cacheable for a long time with Expires (W6) because their URIs are
unique per stream session; CORS on everything so players on other origins work.
"""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from aiohttp import web

from ingest.rtmp.session import STREAM_NAME
from mediacore.media import Kind

if TYPE_CHECKING:
    from mediacore.engine import Engine

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
TS_TYPE = "video/mp2t"
ENGINE_KEY: web.AppKey["Engine"] = web.AppKey("engine")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def cors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    cors = engine.config.http.cors_origin
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "*")
        response.headers["Access-Control-Max-Age"] = "86400"
    else:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = e
        except Exception:
            engine.metrics.http_requests.labels(_route_name(request), "500").inc()
            raise
    if cors:
        response.headers["Access-Control-Allow-Origin"] = cors
        response.headers["Access-Control-Expose-Headers"] = "Age, Content-Length, Date"
    engine.metrics.http_requests.labels(_route_name(request), str(response.status)).inc()
    if isinstance(response, web.Response) and response.body is not None and isinstance(response.body, bytes):
        engine.metrics.http_bytes.inc(len(response.body))
    if isinstance(response, web.HTTPException):
        raise response
    return response


def _not_found(text: str, max_age: int = 1) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=text, headers={"Cache-Control": f"max-age={max_age}"})


def _client_key(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "")
    address = forwarded.split(",")[0].strip() or (request.remote or "?")
    return f"{address}|{request.headers.get('User-Agent', '')[:200]}"


def _stream_name(request: web.Request) -> str:
    name = request.match_info["stream"]
    if len(name) > 128 or not STREAM_NAME.match(name):
        raise _not_found("no such stream")
    return name


async def media_playlist(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    name = _stream_name(request)
    store = engine.stores.get(name)
    if store is None or not store.ready:
        raise _not_found(f"stream {name} is not live (yet)")
    engine.viewers.record(name, _client_key(request))
    td = store.target_duration or 1
    response = web.Response(
        body=store.playlist_text().encode(),
        content_type=PLAYLIST_TYPE,
        headers={"Cache-Control": f"public, max-age={max(1, td // 2)}"},
    )
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


async def segment(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    name = _stream_name(request)
    store = engine.stores.get(name)
    seg = store.get_segment(request.match_info["segment"] + ".ts", time.monotonic()) if store else None
    if seg is None:
        raise _not_found("no such segment", (store.target_duration or 1) if store else 1)
    engine.viewers.record(name, _client_key(request))
    max_age = engine.config.http.segment_max_age
    return web.Response(
        body=seg.data,
        content_type=TS_TYPE,
        headers={
            "Cache-Control": f"public, max-age={max_age}, immutable",
            "Expires": formatdate(time.time() + max_age, usegmt=True),
        },
    )


def stream_summary(engine: "Engine", name: str) -> dict[str, object]:
    stream = engine.hub.streams[name]
    video = stream.tracks.get(Kind.VIDEO)
    audio = stream.tracks.get(Kind.AUDIO)
    store = engine.stores.get(name)
    base = engine.base_url()
    fps = stream.metadata.get("framerate") or stream.metadata.get("videoframerate")
    return {
        "name": name,
        "state": "live" if stream.publishing else ("ended" if stream.ended else "reconnecting"),
        "codecs": ",".join(t.codec_string for t in (video, audio) if t is not None),
        "video": None
        if video is None
        else {
            "codec": video.codec_string,
            "width": video.width,
            "height": video.height,
            "fps": float(fps) if isinstance(fps, (int, float)) else None,
        },
        "audio": None
        if audio is None
        else {"codec": audio.codec_string, "sample_rate": audio.sample_rate, "channels": audio.channels},
        "resolution": f"{video.width}x{video.height}" if video is not None else None,
        "bitrate_bps": round(stream.bitrate()),
        "viewers": engine.viewers.count(name),
        "uptime_s": round(time.time() - stream.published_at, 1) if stream.publishing else 0.0,
        "publishes": stream.stats.publishes,
        "frames": {k.value: n for k, n in stream.stats.frames.items()},
        "segments": (store.next_msn - 0) if store else 0,
        "target_duration": store.target_duration if store else None,
        "urls": {
            "hls": f"{base}/live/{name}/index.m3u8",
            "ll_hls": f"{base}/live/{name}/ll.m3u8",
            "watch": f"{base}/watch/{name}",
        },
    }


async def api_streams(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    body = [stream_summary(engine, name) for name in sorted(engine.hub.streams)]
    return web.json_response(body, headers={"Cache-Control": "no-cache"}, dumps=lambda o: json.dumps(o, indent=1))


async def metrics(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    return web.Response(body=engine.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


async def healthz(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    live = sum(1 for s in engine.hub.streams.values() if s.publishing)
    return web.json_response({"status": "ok", "live_streams": live}, headers={"Cache-Control": "no-cache"})


async def watch(request: web.Request) -> web.StreamResponse:
    name = _stream_name(request)
    html = (WEB_DIR / "watch.html").read_text().replace("{{STREAM}}", name)
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE_KEY]
    items = "".join(
        f'<li><a href="/watch/{n}">{n}</a> ({"live" if s.publishing else "ended" if s.ended else "reconnecting"})</li>'
        for n, s in sorted(engine.hub.streams.items())
    )
    html = (WEB_DIR / "index.html").read_text().replace("{{STREAMS}}", items or "<li>no streams yet</li>")
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def hls_js(request: web.Request) -> web.StreamResponse:
    path = WEB_DIR / "static" / "hls.min.js"
    if not path.exists():
        raise web.HTTPServiceUnavailable(text="hls.js is not installed: run `make install`")
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


def create_app(engine: "Engine") -> web.Application:
    app = web.Application(middlewares=[cors_and_metrics], client_max_size=64 * 1024)
    app[ENGINE_KEY] = engine
    app.router.add_get("/live/{stream}/index.m3u8", media_playlist)
    app.router.add_get("/live/{stream}/{segment:[0-9a-f]+-[0-9]+}.ts", segment)
    app.router.add_get("/api/streams", api_streams)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/watch/{stream}", watch)
    app.router.add_get("/static/hls.min.js", hls_js)
    app.router.add_get("/", index)
    from mediacore.origin import llhls  # here, not at the top: llhls imports this module

    llhls.add_routes(app)
    return app

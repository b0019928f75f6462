"""The public read-only JSON API, the health check and (if configured) Prometheus metrics;
the same readers serve the admin listener (admin.py)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from mediacore.model.media import Kind
from mediacore.model.metadata import PRODUCT_CLASS
from mediacore.origin.http import STREAM_LIST, state_of, stream_list_json
from mediacore.origin.state import OriginState
from mediacore.playlist.uris import playback_urls
from mediacore.store.hls import HlsStore


def stream_state(publishing: bool, ended: bool, failed: bool = False) -> str:
    if failed:
        return "failed"
    return "live" if publishing else ("ended" if ended else "reconnecting")


def stream_summary(state: OriginState, name: str) -> dict[str, object]:
    stream = state.streams[name]
    video = stream.tracks.get(Kind.VIDEO)
    audio = stream.tracks.get(Kind.AUDIO)
    store = state.hls_stores.get(name)
    base = state.base_url()
    fps = stream.metadata.get("framerate") or stream.metadata.get("videoframerate")
    urls = playback_urls(base, name)
    return {
        "name": name,
        "state": stream_state(stream.publishing, stream.ended, name in state.failed),
        "failure": state.failed.get(name),
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
        "bitrate_bps": round(stream.bitrate(state.clock())),
        "viewers": state.viewers.count(name, state.clock()),
        "uptime_s": round(state.wall_clock() - stream.published_at, 1) if stream.publishing else 0.0,
        "publishes": stream.stats.publishes,
        "frames": {k.value: n for k, n in stream.stats.frames.items()},
        "segments": store.next_msn if store else 0,
        "target_duration": store.target_duration if store else None,
        "urls": urls,
        "thumbnail": urls["thumbnail"] if stream.keyframe is not None else None,
        "protected": state.playback.protects(name),
        "product": pinned_product(store),
    }


PRODUCT_FIELDS = {"X-PRODUCT-ID": "id", "X-TITLE": "title", "X-PRICE": "price", "X-CURRENCY": "currency"}
"""The pinned product card's attributes listed in /api/streams (the commerce plugin's card
attributes, docs/live-shopping.md), under these names."""


def pinned_product(store: HlsStore | None) -> dict[str, object] | None:
    """The stream's latest product card still showing at the live edge (the newest
    com.mediacore.product DATERANGE of its HLS playlist): id, title, price (minor units) and
    currency, each null when the card does not carry it; null when there is no card."""
    daterange = store.latest_daterange(PRODUCT_CLASS) if store is not None else None
    if daterange is None:
        return None
    attributes = dict(daterange.attributes)
    return {"card": daterange.id, **{key: attributes.get(attr) for attr, key in PRODUCT_FIELDS.items()}}


async def api_streams(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    return stream_list_json([stream_summary(state, name) for name in sorted(state.streams)])


def metrics_response(state: OriginState) -> web.Response:
    return web.Response(body=state.metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def health_response(state: OriginState) -> web.Response:
    """ "ok"; "degraded" (HTTP 200) while a stream is failed: one broken stream must not take
    the node and its healthy streams out of a balancer, the body and
    mediacore_streams{state="failed"} are for alerting; "draining" (HTTP 503) after SIGTERM,
    so balancers send no new viewers while the ended playlists are still served."""
    live = sum(1 for s in state.streams.values() if s.publishing)
    failed = sorted(name for name in state.failed if name in state.streams)
    status = "draining" if state.draining else "degraded" if failed else "ok"
    return web.json_response(
        {"status": status, "live_streams": live, "failed_streams": failed},
        status=503 if state.draining else 200,
        headers={"Cache-Control": "no-cache"},
    )


async def metrics(request: web.Request) -> web.StreamResponse:
    return metrics_response(state_of(request))


async def healthz(request: web.Request) -> web.StreamResponse:
    return health_response(state_of(request))


def add_routes(app: web.Application, public_metrics: bool) -> None:
    """The public port's read-only routes; /metrics only if [http] public_metrics says so
    (the admin listener always serves it). Nothing here changes anything."""
    app.router.add_get(STREAM_LIST, api_streams)
    app.router.add_get("/healthz", healthz)
    if public_metrics:
        app.router.add_get("/metrics", metrics)

"""HLS (MPEG-TS) routes: the media playlist and its segments.

A stream whose video goes out through fMP4 alone (HEVC, AV1: FMP4_ONLY_CODECS) has no
MPEG-TS; its `index.m3u8` is the LL-HLS multivariant playlist (the same text as `ll.m3u8`),
whose media playlists a player without LL-HLS support plays segment by segment.

Live playlists are cacheable for TD/2 (B.1 table); segments for a long time, with Expires
(W6), because their URIs are unique per stream session.
"""

from __future__ import annotations

from email.utils import formatdate

from aiohttp import web

from mediacore.model.media import FMP4_ONLY_CODECS, Kind
from mediacore.origin.http import client_key, not_found, playlist_response, state_of, stream_name
from mediacore.origin.llhls import multivariant
from mediacore.playlist.uris import HLS_PLAYLIST, HLS_SEGMENT_ROUTE, STREAM_ROOT, hls_segment_from_route

TS_TYPE = "video/mp2t"


async def media_playlist(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    name = stream_name(request)
    stream = state.streams.get(name)
    video = stream.tracks.get(Kind.VIDEO) if stream is not None else None
    if video is not None and video.codec in FMP4_ONLY_CODECS:
        return await multivariant(request)
    store = state.hls_stores.get(name)
    if store is None or not store.ready:
        raise not_found(f"stream {name} is not live (yet)")
    state.viewers.record(name, client_key(request), state.clock())
    td = store.target_duration or 1
    return playlist_response(request, store.playlist_text(), f"public, max-age={max(1, td // 2)}")


async def segment(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    name = stream_name(request)
    store = state.hls_stores.get(name)
    seg = store.get_segment(hls_segment_from_route(request.match_info["segment"]), state.clock()) if store else None
    if seg is None:
        raise not_found("no such segment", (store.target_duration or 1) if store else 1)
    state.viewers.record(name, client_key(request), state.clock())
    max_age = state.http.segment_max_age
    return web.Response(
        body=seg.data,
        content_type=TS_TYPE,
        headers={
            "Cache-Control": f"public, max-age={max_age}, immutable",
            "Expires": formatdate(state.wall_clock() + max_age, usegmt=True),
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(STREAM_ROOT + HLS_PLAYLIST, media_playlist)
    app.router.add_get(STREAM_ROOT + HLS_SEGMENT_ROUTE, segment)

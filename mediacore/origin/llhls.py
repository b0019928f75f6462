"""LL-HLS HTTP: multivariant, media playlists with Blocking Playlist Reload and Delta
Updates, init segments, parts (blocking on the preload hint) and parent segments.

`decide()` is the pure decision for a playlist request, with the draft's sentence beside
each branch (draft-pantos-hls-rfc8216bis S6.2.5); the handlers only wait and write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from mediacore.model.media import Kind
from mediacore.origin.http import client_key, not_found, not_yet, playlist_response, state_of, stream_name
from mediacore.origin.state import OriginState
from mediacore.playlist.multivariant import STEREO, AudioRendition, MultivariantPlaylist, Variant
from mediacore.playlist.uris import (
    LL_DIR,
    LL_MEDIA_ROUTE,
    LL_MULTIVARIANT,
    LL_RENDITIONS,
    STREAM_ROOT,
    ll_playlist_uri,
    ll_prefix,
    ll_rendition_uri,
    parse_ll_media,
)
from mediacore.store.ll import LlRendition

MAX_DIRECTIVE_DIGITS = 18
"""_HLS_msn / _HLS_part longer than this are refused: no stream reaches 10^18 segments."""
BLOCKING_CACHE_TDS = 6
"""Target durations a blocking playlist response may be cached: its (msn, part) never changes."""
MULTIVARIANT_MAX_AGE = 2
"""Seconds the multivariant playlist may be cached: it changes only with codecs or bitrate."""


@dataclass(frozen=True, slots=True)
class Request:
    msn: int | None
    part: int | None
    skip: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200 to answer now, 0 to wait, 400 to refuse
    reason: str = ""


def parse_directives(query: Mapping[str, str]) -> Request:
    def number(name: str) -> int | None:
        value = query.get(name)
        if value is None:
            return None
        if not value.isdigit() or len(value) > MAX_DIRECTIVE_DIGITS:
            raise ValueError(f"{name} must be a non-negative integer")
        return int(value)

    skip = query.get("_HLS_skip")
    return Request(number("_HLS_msn"), number("_HLS_part"), skip if skip in ("YES", "v2") else None)


def advance_part_limit(part_target: float) -> int:
    """S6.2.5.2: 3 divided by PART-TARGET if PART-TARGET is under 1 s, else 3 parts."""
    return math.ceil(3 / part_target) if part_target < 1 else 3


def decide(rendition: LlRendition, request: Request) -> Decision:
    if request.part is not None and request.msn is None:
        # "If the _HLS_part directive is present without _HLS_msn, the server MUST return 400."
        return Decision(400, "_HLS_part without _HLS_msn")
    if request.msn is None or rendition.ended:
        # "If the Playlist contains an EXT-X-ENDLIST tag, the server MUST ignore the directives."
        return Decision(200)
    last_msn, last_part = rendition.last_part()
    if request.msn > last_msn + 2:
        # "...if the _HLS_msn is greater than the last Media Sequence Number in the Playlist
        # plus 2, the server SHOULD immediately return 400."
        return Decision(400, f"_HLS_msn {request.msn} is more than 2 past the last segment {last_msn}")
    completed = rendition.last_complete_msn()
    if request.part is not None and request.msn == last_msn and request.msn > completed:
        # (A part index past a *complete* parent's last part is part 0 of the next, B3.)
        limit = advance_part_limit(rendition.part_target)
        if request.part > last_part + limit:
            # "...more than the Advance Part Limit beyond the last Partial Segment: 400."
            return Decision(400, f"_HLS_part {request.part} is beyond the advance part limit")
    if rendition.has(request.msn, request.part):
        # Satisfied, or older than the playlist: "the server MUST return the entire
        # Playlist ... even if it is no longer in the Playlist" (B4).
        return Decision(200)
    return Decision(0)


def _renditions(request: web.Request) -> tuple[OriginState, str, dict[Kind, LlRendition]]:
    state = state_of(request)
    name = stream_name(request)
    renditions = state.ll_renditions.get(name)
    if renditions is None or not renditions[Kind.VIDEO].ready and not renditions[Kind.AUDIO].ready:
        raise not_found(f"stream {name} is not live (yet)")
    state.viewers.record(name, client_key(request), state.clock())
    return state, name, renditions


def multivariant_playlist(state: OriginState, name: str, renditions: dict[Kind, LlRendition]) -> MultivariantPlaylist:
    """One variant (video, or audio alone) with the audio rendition group beside it."""
    stream = state.streams[name]
    video, audio = renditions[Kind.VIDEO], renditions[Kind.AUDIO]
    video_track = stream.tracks.get(Kind.VIDEO)
    audio_track = stream.tracks.get(Kind.AUDIO)
    playlist = MultivariantPlaylist()
    peak, average = 0, 0
    codecs: list[str] = []
    with_audio = audio.ready and audio_track is not None
    if with_audio and audio_track is not None:
        a_peak, a_avg = audio.bandwidth()
        peak, average = peak + a_peak, average + a_avg
        playlist.audio.append(
            AudioRendition("aac", "main", ll_playlist_uri(audio.name), audio_track.channels or STEREO)
        )
        codecs.append(audio_track.codec_string)
    resolution, frame_rate = None, None
    if video.ready and video_track is not None:
        v_peak, v_avg = video.bandwidth()
        peak, average = peak + v_peak, average + v_avg
        codecs.insert(0, video_track.codec_string)
        resolution = (video_track.width, video_track.height)
        frame_rate = video.frame_rate()
    playlist.variants.append(
        Variant(
            ll_playlist_uri(video.name if video.ready else audio.name),
            max(peak, 1),
            max(average, 1),
            tuple(codecs),
            resolution,
            frame_rate,
            "aac" if with_audio and video.ready else None,
        )
    )
    return playlist


async def multivariant(request: web.Request) -> web.StreamResponse:
    state, name, renditions = _renditions(request)
    text = multivariant_playlist(state, name, renditions).render()
    return playlist_response(request, text, f"public, max-age={MULTIVARIANT_MAX_AGE}")


async def media_playlist(request: web.Request) -> web.StreamResponse:
    state, _, renditions = _renditions(request)
    prefix = LL_RENDITIONS.get(request.match_info["rendition"])
    rendition = next((r for r in renditions.values() if r.prefix == prefix), None)
    if rendition is None or not rendition.ready:
        raise not_found("no such rendition")
    td = rendition.target_duration or 1
    try:
        directives = parse_directives(request.query)
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e), headers={"Cache-Control": f"max-age={td}"}) from e
    decision = decide(rendition, directives)
    if decision.status == 400:
        raise web.HTTPBadRequest(text=decision.reason, headers={"Cache-Control": f"max-age={td}"})
    blocking = directives.msn is not None and not rendition.ended
    if decision.status == 0:
        deadline = state.clock() + state.blocking_timeout_factor * td
        while not rendition.has(directives.msn or 0, directives.part):
            remaining = deadline - state.clock()
            if remaining <= 0:
                # "...if the server cannot answer within 3 x Target Duration: 503" (B8)
                raise web.HTTPServiceUnavailable(
                    text="the requested part did not appear in time", headers={"Cache-Control": f"max-age={td}"}
                )
            await rendition.changed.wait(remaining)
        state.metrics.ll_blocked_wake.labels("playlist").observe(state.clock() - rendition.changed_at)
    # Blocking responses are immutable for their (msn, part): cacheable for 6 x TD; the
    # directive-less playlist changes every part: short-lived (HLS-RULES 1c).
    cache = f"public, max-age={BLOCKING_CACHE_TDS * td}" if blocking else "public, max-age=1"
    return playlist_response(request, rendition.render(directives.skip, state.clock()), cache)


async def media(request: web.Request) -> web.StreamResponse:
    state, _, renditions = _renditions(request)
    name = request.match_info["name"]
    ext = request.match_info["ext"]
    uri = f"{name}.{ext}"
    prefix = ll_prefix(name)
    rendition = next((r for r in renditions.values() if r.prefix == prefix), None)
    if rendition is None:
        raise not_found("no such part or segment")
    td = rendition.target_duration or 1
    data = rendition.resource(uri, state.clock())
    parsed = parse_ll_media(name) if ext == "m4s" else None
    if data is None and parsed is not None and parsed.part is not None:
        # H5: the hinted part is requestable as soon as it is hinted; the response waits
        # until the part is complete, then goes out whole (H6). Anything else is 404 (H7).
        deadline = state.clock() + state.blocking_timeout_factor * td
        while data is None:
            if (
                parsed.session != rendition.session_id
                or (parsed.msn, parsed.part) != rendition.next_part()
                or rendition.ended
            ):
                break
            remaining = deadline - state.clock()
            if remaining <= 0:
                raise web.HTTPServiceUnavailable(headers={"Cache-Control": f"max-age={td}"})
            await rendition.changed.wait(remaining)
            data = rendition.resource(uri, state.clock())
            if data is not None:
                state.metrics.ll_blocked_wake.labels("part").observe(state.clock() - rendition.changed_at)
    if data is None:
        if (
            parsed is not None
            and parsed.session == rendition.session_id
            and (parsed.msn, parsed.part or 0) >= rendition.next_part()
            and not rendition.ended
        ):
            raise not_yet("no such part or segment yet")
        raise not_found("no such part or segment", td)
    content_type = "video/mp4" if rendition.prefix == LL_RENDITIONS["video"] else "audio/mp4"
    max_age = state.http.segment_max_age
    return web.Response(
        body=data, content_type=content_type, headers={"Cache-Control": f"public, max-age={max_age}, immutable"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(STREAM_ROOT + LL_MULTIVARIANT, multivariant)
    app.router.add_get(STREAM_ROOT + LL_DIR + ll_rendition_uri("{rendition}"), media_playlist)
    app.router.add_get(STREAM_ROOT + LL_DIR + LL_MEDIA_ROUTE, media)

"""LL-HLS HTTP: multivariant, media playlists with Blocking Playlist Reload and Delta
Updates, init segments, parts (blocking on the preload hint) and parent segments.

`decide()` is the pure decision for a playlist request, with the draft's sentence beside
each branch (draft-pantos-hls-rfc8216bis S6.2.5); the handlers only wait and write.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from mediacore.llstore import LlRendition
from mediacore.origin.app import ENGINE_KEY, _client_key, _not_found, _stream_name
from mediacore.media import Kind

if TYPE_CHECKING:
    from mediacore.engine import Engine

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


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
        if not value.isdigit() or len(value) > 18:
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
    completed = rendition.segments[-1].msn if rendition.segments else -1
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


def _renditions(request: web.Request) -> tuple["Engine", dict[Kind, LlRendition]]:
    engine = request.app[ENGINE_KEY]
    name = _stream_name(request)
    renditions = engine.ll_renditions.get(name)
    if renditions is None or not renditions[Kind.VIDEO].ready and not renditions[Kind.AUDIO].ready:
        raise _not_found(f"stream {name} is not live (yet)")
    engine.viewers.record(name, _client_key(request))
    return engine, renditions


def _playlist_response(request: web.Request, text: str, cache: str) -> web.Response:
    response = web.Response(body=text.encode(), content_type=PLAYLIST_TYPE, headers={"Cache-Control": cache})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


async def multivariant(request: web.Request) -> web.StreamResponse:
    engine, renditions = _renditions(request)
    stream = engine.hub.streams[request.match_info["stream"]]
    video, audio = renditions[Kind.VIDEO], renditions[Kind.AUDIO]
    video_track = stream.tracks.get(Kind.VIDEO)
    audio_track = stream.tracks.get(Kind.AUDIO)
    lines = ["#EXTM3U", "#EXT-X-INDEPENDENT-SEGMENTS"]
    peak, average = 0, 0
    codecs = []
    attributes = []
    if audio.ready and audio_track is not None:
        a_peak, a_avg = audio.bandwidth()
        peak, average = peak + a_peak, average + a_avg
        lines.append(
            '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="main",DEFAULT=YES,AUTOSELECT=YES,'
            f'CHANNELS="{audio_track.channels or 2}",URI="ll/audio.m3u8"'
        )
        codecs.append(audio_track.codec_string)
    if video.ready and video_track is not None:
        v_peak, v_avg = video.bandwidth()
        peak, average = peak + v_peak, average + v_avg
        codecs.insert(0, video_track.codec_string)
        attributes.append(f"RESOLUTION={video_track.width}x{video_track.height}")
        attributes.append(f"FRAME-RATE={video.frame_rate():.3f}")
    attrs = [f"BANDWIDTH={max(peak, 1)}", f"AVERAGE-BANDWIDTH={max(average, 1)}", f'CODECS="{",".join(codecs)}"']
    attrs += attributes
    if audio.ready and audio_track is not None and video.ready:
        attrs.append('AUDIO="aac"')
    lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
    lines.append("ll/video.m3u8" if video.ready else "ll/audio.m3u8")
    return _playlist_response(request, "\n".join(lines) + "\n", "public, max-age=2")


async def media_playlist(request: web.Request) -> web.StreamResponse:
    engine, renditions = _renditions(request)
    kind = {"video": Kind.VIDEO, "audio": Kind.AUDIO}.get(request.match_info["rendition"])
    if kind is None or not renditions[kind].ready:
        raise web.HTTPNotFound(text="no such rendition", headers={"Cache-Control": "max-age=1"})
    rendition = renditions[kind]
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
        timeout = engine.config.llhls.blocking_timeout_factor * td
        deadline = time.monotonic() + timeout
        while not rendition.has(directives.msn or 0, directives.part):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # "...if the server cannot answer within 3 x Target Duration: 503" (B8)
                raise web.HTTPServiceUnavailable(
                    text="the requested part did not appear in time", headers={"Cache-Control": f"max-age={td}"}
                )
            await rendition.changed.wait(remaining)
        engine.metrics.ll_blocked_wake.labels("playlist").observe(time.monotonic() - rendition.changed_at)
    # Blocking responses are immutable for their (msn, part): cacheable for 6 x TD; the
    # directive-less playlist changes every part: short-lived (HLS-RULES 1c).
    cache = f"public, max-age={6 * td}" if blocking else "public, max-age=1"
    return _playlist_response(request, rendition.render(directives.skip), cache)


def _parse_part_name(name: str) -> tuple[str, str, int, int | None] | None:
    """'v-SESSION-MSN.PART' or 'v-SESSION-MSN' -> (prefix, session, msn, part)."""
    try:
        prefix, session, rest = name.split("-", 2)
        msn_text, _, part_text = rest.partition(".")
        return prefix, session, int(msn_text), int(part_text) if part_text else None
    except ValueError:
        return None


async def media(request: web.Request) -> web.StreamResponse:
    engine, renditions = _renditions(request)
    name = request.match_info["name"]
    ext = request.match_info["ext"]
    uri = f"{name}.{ext}"
    parsed = _parse_part_name(name)
    prefix = parsed[0] if parsed else name.split("-", 1)[0]
    rendition = renditions[Kind.VIDEO] if prefix == "v" else renditions[Kind.AUDIO] if prefix == "a" else None
    if rendition is None:
        raise web.HTTPNotFound(headers={"Cache-Control": "max-age=1"})
    td = rendition.target_duration or 1
    data = rendition.resource(uri, time.monotonic())
    if data is None and ext == "m4s" and parsed is not None and parsed[3] is not None:
        _, session, msn, part = parsed
        # H5: the hinted part is requestable as soon as it is hinted; the response waits
        # until the part is complete, then goes out whole (H6). Anything else is 404 (H7).
        deadline = time.monotonic() + engine.config.llhls.blocking_timeout_factor * td
        while data is None:
            if session != rendition.session_id or (msn, part) != rendition.next_part() or rendition.ended:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise web.HTTPServiceUnavailable(headers={"Cache-Control": f"max-age={td}"})
            await rendition.changed.wait(remaining)
            data = rendition.resource(uri, time.monotonic())
            if data is not None:
                engine.metrics.ll_blocked_wake.labels("part").observe(time.monotonic() - rendition.changed_at)
    if data is None:
        raise web.HTTPNotFound(text="no such part or segment", headers={"Cache-Control": f"max-age={td}"})
    content_type = "video/mp4" if rendition.prefix == "v" else "audio/mp4"
    max_age = engine.config.http.segment_max_age
    return web.Response(body=data, content_type=content_type,
                        headers={"Cache-Control": f"public, max-age={max_age}, immutable"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/live/{stream}/ll.m3u8", multivariant)
    app.router.add_get("/live/{stream}/ll/{rendition}.m3u8", media_playlist)
    app.router.add_get(r"/live/{stream}/ll/{name:[av]-[0-9a-z.\-]+}.{ext:mp4|m4s}", media)

"""The HLS (MPEG-TS) packager of one stream: hub subscription -> segments in an HlsStore.

TARGETDURATION is fixed by the store when the first segment lands (mediacore/store/window.py,
T3). The engine only remuxes, so it cannot shorten a GOP that the publisher made longer than
that: such a segment is logged. A timestamp jump beyond max(10 s, 3 x TARGETDURATION) starts
a new timeline, and a segment no keyframe closes is cut at 3 x TARGETDURATION
(mediacore/packager/timeline.py).

A stream whose video is HEVC or AV1 (FMP4_ONLY_CODECS) makes no MPEG-TS: its frames are
dropped here, and the origin serves the LL-HLS fMP4 playlists at `index.m3u8` instead.

Timed metadata from the hub joins the segment it starts in (mediacore/packager/metadata.py):
an EXT-X-DATERANGE listed before it, and an ID3 tag in it at the item's PTS.

A segment is muxed on the loop when it holds at most MUX_ON_LOOP_BYTES of media, on the
mux thread when larger. The muxer is Python around a compiled packet loop and holds the GIL
throughout, so a thread runs nothing in parallel with the loop: it costs a hand-off and a
malloc arena of its own, and buys one thing, that the loop gets the GIL back every switch
interval instead of waiting out the whole segment (4.5 ms for 15 MiB compiled, 31 ms with
the pure twin; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from mediacore.hub.hub import Discontinuity, Stream, StreamEnded, Subscription, Unpublished
from mediacore.model.decode_order import DecodeOrder
from mediacore.model.media import FMP4_ONLY_CODECS, Frame, Kind
from mediacore.model.metadata import TimedMetadata
from mediacore.model.timebase import round_half_up
from mediacore.packager.config import PACKAGER_QUEUE_BYTES, HlsConfig
from mediacore.packager.metadata import PendingMetadata, daterange_of, id3_tag
from mediacore.packager.segmenter import VIDEO_STALL_90K, SegmentDraft, Segmenter, media_bytes
from mediacore.packager.timeline import TimelineGuard, first_of_doubling, jump_limit, segment_limit
from mediacore.packager.ts import TsMuxer
from mediacore.store.hls import HlsStore
from mediacore.store.window import target_duration

log = logging.getLogger(__name__)

MUX_ON_LOOP_BYTES = 1024 * 1024
"""Media bytes up to which a segment is muxed on the event loop: at most about 0.4 ms of the
loop with the compiled packet loop, 2.4 ms with the pure twin. A 2 s segment at up to about
4 Mb/s."""


class HlsPackager:
    def __init__(
        self,
        stream: Stream,
        store: HlsStore,
        config: HlsConfig,
        mux_thread: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.stream = stream
        self.store = store
        self.config = config
        self.mux_thread = mux_thread
        self.subscription: Subscription = stream.subscribe(
            "hls-packager", max_items=config.queue_frames, max_bytes=PACKAGER_QUEUE_BYTES
        )
        self._segmenter: Segmenter | None = None
        self._configs: dict[Kind, bytes] = {}
        self._decode_order = DecodeOrder()
        self._guard = TimelineGuard()
        self._muxer = TsMuxer()
        self._warned_long = False
        self._fmp4_only = False
        self._audio_segments = 0  # segments of audio alone, while video was stalled or cut
        self._metadata = PendingMetadata()
        self._limits_td: int | None = None
        self._limits: tuple[float, float] | None = None  # (jump limit, segment limit) at _limits_td
        self.segments_made = 0
        self.metadata_written = 0

    async def run(self) -> None:
        try:
            while True:
                item = self.subscription.get_nowait()  # no coroutine while frames are queued
                if item is None:
                    item = await self.subscription.get()
                if isinstance(item, Frame):
                    await self._on_frame(item)
                elif isinstance(item, (Discontinuity, Unpublished)):
                    self._guard.reset()
                    await self._discontinuity()
                elif isinstance(item, TimedMetadata):
                    self._metadata.add(item)
                elif isinstance(item, StreamEnded):
                    await self._discontinuity()
                    self.store.end()
                    log.info("stream %s: ended, EXT-X-ENDLIST written", self.stream.name)
                    return
        finally:
            self.subscription.close()

    async def _on_frame(self, frame: Frame) -> None:
        kind = frame.track.kind
        video = self.stream.tracks.get(Kind.VIDEO)
        if video is not None and video.codec in FMP4_ONLY_CODECS or frame.track.codec in FMP4_ONLY_CODECS:
            if not self._fmp4_only:
                self._fmp4_only = True
                log.info(
                    "stream %s: %s video goes out as fMP4 only; index.m3u8 serves the LL-HLS playlists",
                    self.stream.name,
                    (video or frame.track).codec.upper(),
                )
            return
        config = self._configs.get(kind)
        if (
            self._segmenter is None
            or (config is not None and config != frame.track.config)
            or (config is None and self._configs)
        ):
            # First frame, a codec change, or a new track: a new timeline segment (M6).
            if self._segmenter is not None:
                await self._discontinuity()
            self._guard.reset()
            has_video = Kind.VIDEO in self.stream.tracks
            if self._segmenter is None:
                self._segmenter = Segmenter(self.config.segment_duration, has_video, self.config.max_segment_bytes)
            self._segmenter.has_video = has_video
            self._configs = {k: t.config for k, t in self.stream.tracks.items()}
            self._configs[kind] = frame.track.config
        segmenter = self._segmenter
        settings = self.config
        td = self.store.target_duration
        if td != self._limits_td or self._limits is None:
            self._limits_td = td
            self._limits = (
                jump_limit(settings.max_timestamp_jump, td or target_duration(0.0, settings.segment_duration)),
                segment_limit(settings.max_timestamp_jump, td, settings.segment_duration),
            )
        limit, longest = self._limits
        if self._guard.jumped(frame, limit):
            if first_of_doubling(self._guard.jumps):
                log.warning(
                    "stream %s: %s timestamps jumped %+.1f s (more than %g s); new timeline, EXT-X-DISCONTINUITY"
                    " (%d so far)",
                    self.stream.name,
                    kind.value,
                    self._guard.last_jump,
                    limit,
                    self._guard.jumps,
                )
            await self._discontinuity()
        offsets = self._guard.bad_offsets
        frame = self._guard.presentable(frame, limit)
        if self._guard.bad_offsets != offsets and first_of_doubling(self._guard.bad_offsets):
            log.warning(
                "stream %s: a %s frame presented more than %g s from its decode time; presented at its decode"
                " time (%d so far)",
                self.stream.name,
                kind.value,
                limit,
                self._guard.bad_offsets,
            )
        segmenter.max_90k = round(longest * 90000)
        frame = self._decode_order.fix(frame)
        cuts = segmenter.stall_cuts
        forced = (segmenter.keyframe_cuts, segmenter.byte_cuts, segmenter.bounded)
        for draft in segmenter.push(frame):
            if draft.audio_start:
                self._audio_segments += 1
                if first_of_doubling(self._audio_segments):
                    log.info(
                        "stream %s: no decodable video; %.2f s of audio in a segment of its own (within"
                        " TARGETDURATION, %d so far)",
                        self.stream.name,
                        draft.duration,
                        self._audio_segments,
                    )
            await self._emit(draft)
        if segmenter.stall_cuts != cuts and first_of_doubling(segmenter.stall_cuts):
            log.info(
                "stream %s: no video for %.1f s; segment cut where video ended (%d so far)",
                self.stream.name,
                VIDEO_STALL_90K / 90000,
                segmenter.stall_cuts,
            )
        if segmenter.keyframe_cuts != forced[0] and first_of_doubling(segmenter.keyframe_cuts):
            log.warning(
                "stream %s: no keyframe for %g s; segment cut, video resumes at the next keyframe (%d so far)",
                self.stream.name,
                longest,
                segmenter.keyframe_cuts,
            )
        if segmenter.byte_cuts != forced[1] and first_of_doubling(segmenter.byte_cuts):
            log.warning(
                "stream %s: a segment reached %g MiB before a keyframe closed it (frozen timestamps?); segment"
                " cut, video resumes at the next keyframe (%d so far)",
                self.stream.name,
                self.config.max_segment_bytes / 2**20,
                segmenter.byte_cuts,
            )
        if segmenter.bounded != forced[2] and first_of_doubling(segmenter.bounded):
            log.warning(
                "stream %s: a hole or jump in the timestamps would make a segment longer than %g s; it ends"
                " with its media, EXT-X-DISCONTINUITY (%d so far)",
                self.stream.name,
                longest,
                segmenter.bounded,
            )

    async def _discontinuity(self) -> None:
        if self._segmenter is None:
            return
        draft = self._segmenter.discontinuity()
        self._decode_order.reset()
        if draft is not None:
            await self._emit(draft)

    async def _emit(self, draft: SegmentDraft) -> None:
        store = self.store
        if not draft.frames or draft.end_90k <= draft.start_90k or store.ended:
            return
        duration = draft.duration
        if (
            store.target_duration is not None
            and round_half_up(duration) > store.target_duration
            and not self._warned_long
        ):
            self._warned_long = True
            log.warning(
                "stream %s: a %.3f s GOP exceeds TARGETDURATION %d; ask the publisher for keyframes every %g s",
                self.stream.name,
                duration,
                store.target_duration,
                self.config.segment_duration,
            )
        items = self._metadata.due(draft.end_90k)
        in_band = [(max(i.pts_90k, draft.start_90k), id3_tag(i)) for i in items]
        if media_bytes(draft.frames) <= MUX_ON_LOOP_BYTES:
            data = self._muxer.mux(draft.frames, in_band)
        else:
            loop = asyncio.get_running_loop()
            data = await loop.run_in_executor(self.mux_thread, self._muxer.mux, draft.frames, in_band)
            if store.ended:
                return
        fixed = store.target_duration
        store.add_segment(
            duration, data, draft.wallclock, draft.discontinuity, self.clock(), [daterange_of(i) for i in items]
        )
        self.metadata_written += len(items)
        if fixed is None:
            log.info("stream %s: TARGETDURATION fixed at %d s", self.stream.name, store.target_duration)
        self.segments_made += 1

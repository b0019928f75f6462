"""The LL-HLS packager of one stream: hub subscription -> CMAF parts in two renditions
(video, audio), each an LlRendition. Parts are written the moment their last frame's
duration is known (one frame after it arrives); boxes are tiny, so this runs on the loop.
A timestamp jump beyond max(10 s, 3 x TARGETDURATION) (mediacore/packager/timeline.py), or a
hole in one track longer than GAP parts may fill (mediacore/packager/parts.py), starts a new
timeline in every rendition at once, so their discontinuities stay aligned.

Timed metadata from the hub joins, in each rendition, the first part whose media presents at
or past its PTS (mediacore/packager/metadata.py): an EXT-X-DATERANGE listed before that part
in both renditions, and an emsg (ID3) box at the item's PTS in that part of one rendition,
video when the stream has video, so a player sees each item once."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable

from mediacore.hub.hub import Discontinuity, Stream, StreamEnded, Subscription, Unpublished
from mediacore.model.decode_order import DecodeOrder
from mediacore.model.media import Frame, Kind, Track
from mediacore.model.metadata import TimedMetadata
from mediacore.model.timebase import rescale
from mediacore.packager.config import PACKAGER_QUEUE_BYTES, HlsConfig, LlHlsConfig
from mediacore.packager.fmp4 import emsg, fragment, init_segment
from mediacore.packager.metadata import PendingMetadata, daterange_of, id3_tag
from mediacore.packager.parts import ClosedPart, PartCutter
from mediacore.packager.timeline import TimelineGuard, first_of_doubling, jump_limit, segment_limit
from mediacore.store.ll import LlRendition
from mediacore.store.window import target_duration

log = logging.getLogger(__name__)


class _Track:
    def __init__(self, rendition: LlRendition, track: Track, config: LlHlsConfig, hls: HlsConfig) -> None:
        self.rendition = rendition
        self.track = track
        self.cutter = PartCutter(
            track.timebase, track.kind is Kind.VIDEO, config.part_duration, hls.segment_duration, hls.max_segment_bytes
        )
        self.sequence = 0
        rendition.set_init(init_segment(track))


class LlHlsPackager:
    def __init__(
        self,
        stream: Stream,
        renditions: dict[Kind, LlRendition],
        config: LlHlsConfig,
        hls: HlsConfig,
        clock: Callable[[], float] = time.monotonic,
        from_keyframe: bool = False,
    ) -> None:
        """`from_keyframe`: package nothing before the first video keyframe (a packager
        restarted mid-stream), so the audio rendition's parents start with video's and stay
        aligned with them (I3) instead of running a GOP ahead for the rest of the stream."""
        self.clock = clock
        self.stream = stream
        self.renditions = renditions
        self._await_keyframe = from_keyframe
        self.config = config
        self.hls = hls
        self.subscription: Subscription = stream.subscribe(
            "llhls-packager", max_items=hls.queue_frames, max_bytes=PACKAGER_QUEUE_BYTES
        )
        self._tracks: dict[Kind, _Track] = {}
        self._decode_order = DecodeOrder()
        self._guard = TimelineGuard()
        self._metadata = {kind: PendingMetadata() for kind in renditions}
        self._td: int | None = None  # TARGETDURATION once every rendition has fixed it
        self._limits_td: int | None = None
        self._limits: tuple[float, float] | None = None  # (jump limit, segment limit) at _limits_td
        self.parts_made = 0
        self.metadata_written = 0

    async def run(self) -> None:
        try:
            while True:
                item = self.subscription.get_nowait()  # no coroutine while frames are queued
                if item is None:
                    item = await self.subscription.get()
                if isinstance(item, Frame):
                    self._on_frame(item)
                elif isinstance(item, (Discontinuity, Unpublished)):
                    self._guard.reset()
                    self._flush(discontinuity=True)
                elif isinstance(item, TimedMetadata):
                    self._on_metadata(item)
                elif isinstance(item, StreamEnded):
                    self._flush(discontinuity=False)
                    now = self.clock()
                    for rendition in self.renditions.values():
                        rendition.end(now)
                    return
        finally:
            self.subscription.close()

    def _on_frame(self, frame: Frame) -> None:
        kind = frame.track.kind
        if self._await_keyframe:
            if Kind.VIDEO in self.stream.tracks and not (kind is Kind.VIDEO and frame.keyframe):
                return
            self._await_keyframe = False
        rendition = self.renditions.get(kind)
        if rendition is None:
            return
        state = self._tracks.get(kind)
        if kind is Kind.AUDIO:
            # Audio fixes TARGETDURATION itself only in an audio-only stream. Decided at each
            # frame, not once: an RTP video track may appear after the first audio frames.
            rendition.td_source = self.renditions.get(Kind.VIDEO) if Kind.VIDEO in self.stream.tracks else None
        if state is None or state.track.config != frame.track.config:
            if state is not None:  # codec parameters changed: new init, discontinuity (M6)
                self._emit(state, state.cutter.flush())
                rendition.mark_discontinuity()
            state = _Track(rendition, frame.track, self.config, self.hls)
            self._tracks[kind] = state
            self._decode_order.reset(kind)
            self._guard.reset(kind)
        td = self._target_duration()
        if td != self._limits_td or self._limits is None:
            self._limits_td = td
            self._limits = (
                jump_limit(self.hls.max_timestamp_jump, td or target_duration(0.0, self.hls.segment_duration)),
                segment_limit(self.hls.max_timestamp_jump, td, self.hls.segment_duration),
            )
        limit, longest = self._limits
        if self._guard.jumped(frame, limit):
            if first_of_doubling(self._guard.jumps):
                log.info(
                    "stream %s: LL-HLS: %s timestamps jumped %+.1f s; new timeline in every rendition (%d so far)",
                    self.stream.name,
                    kind.value,
                    self._guard.last_jump,
                    self._guard.jumps,
                )
            self._flush(discontinuity=True)
        frame = self._guard.presentable(frame, limit)
        cutter = state.cutter
        cutter.max_parent_ticks = round(longest * state.track.timebase)
        cuts = cutter.keyframe_cuts + cutter.byte_cuts
        self._emit(state, cutter.push(self._decode_order.fix(frame)))
        if cutter.new_timeline:
            # A hole in this track longer than GAP parts may fill: every rendition starts the new
            # timeline together (their discontinuities line up).
            if first_of_doubling(cutter.new_timelines):
                log.info(
                    "stream %s: LL-HLS: a hole of more than %g s in %s; new timeline in every rendition (%d so far)",
                    self.stream.name,
                    self.hls.segment_duration,
                    kind.value,
                    cutter.new_timelines,
                )
            for other in self._tracks.values():
                if other is not state:
                    self._emit(other, other.cutter.flush())
                    self._decode_order.reset(other.track.kind)
            for each in self.renditions.values():
                each.mark_discontinuity()
        made = cutter.keyframe_cuts + cutter.byte_cuts
        if made != cuts and first_of_doubling(made):
            log.warning(
                "stream %s: LL-HLS: no keyframe within %g s or %g MiB; %s parent cut, video resumes at the next"
                " keyframe (%d so far)",
                self.stream.name,
                longest,
                self.hls.max_segment_bytes / 2**20,
                kind.value,
                made,
            )

    def _on_metadata(self, item: TimedMetadata) -> None:
        """Queue the item for every rendition whose track the stream has (a rendition without
        media would hold it forever)."""
        for kind, pending in self._metadata.items():
            if kind in self.stream.tracks:
                pending.add(item)

    def _metadata_for(self, state: _Track, part: ClosedPart) -> tuple[list[TimedMetadata], bytes]:
        """The items starting in `part`, and the emsg boxes it carries for them."""
        kind = state.track.kind
        pending = self._metadata[kind]
        if not len(pending):
            return [], b""
        t = part.base_dts
        end = t
        for sample in part.samples:
            end = max(end, t + sample.composition_offset + sample.duration)
            t += sample.duration
        tb = state.track.timebase
        items = pending.due(end if tb == 90000 else rescale(end, tb, 90000))
        if not items or not (kind is Kind.VIDEO or Kind.VIDEO not in self.stream.tracks):
            return items, b""
        boxes = b"".join(
            emsg(
                tb,
                i.pts_90k if tb == 90000 else rescale(i.pts_90k, 90000, tb),
                None if i.duration is None else round(i.duration * tb),
                zlib.crc32(i.id.encode()),
                id3_tag(i),
            )
            for i in items
        )
        return items, boxes

    def _target_duration(self) -> int | None:
        """The renditions' TARGETDURATION (they share one, T4), None until the first parent fixes it."""
        if self._td is not None:
            return self._td
        fixed = [r.target_duration for r in self.renditions.values() if r.target_duration is not None]
        if len(fixed) == len(self.renditions):
            self._td = max(fixed)  # each rendition fixes its TARGETDURATION once (T3)
        return max(fixed) if fixed else None

    def _emit(self, state: _Track, parts: list[ClosedPart]) -> None:
        for part in parts:
            items: list[TimedMetadata] = []
            if part.gap:
                data = b""  # a hole in the track: listed as GAP=YES, nothing to write
            else:
                state.sequence += 1
                items, boxes = self._metadata_for(state, part)
                data = boxes + fragment(part.samples, part.base_dts, state.sequence)
            state.rendition.add_part(
                data,
                part.duration / state.track.timebase,
                part.independent,
                part.starts_parent,
                part.ends_parent,
                part.wallclock,
                self.clock(),  # when this part is complete: blocked requests' wake-up is timed from it
                len(part.samples),
                gap=part.gap,
                dateranges=[daterange_of(i) for i in items],
            )
            self.parts_made += 1
            self.metadata_written += len(items)

    def _flush(self, discontinuity: bool) -> None:
        for state in self._tracks.values():
            self._emit(state, state.cutter.flush())
            if discontinuity:
                state.rendition.mark_discontinuity()
        self._decode_order.reset()

"""The LL-HLS packager of one stream: hub subscription -> CMAF parts in two renditions
(video, audio), each an LlRendition. Parts are written the moment their last frame's
duration is known (one frame after it arrives); boxes are tiny, so this runs on the loop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mediacore.hub.hub import Discontinuity, Stream, StreamEnded, Subscription, Unpublished
from mediacore.model.decode_order import DecodeOrder
from mediacore.model.media import Frame, Kind, Track
from mediacore.packager.config import PACKAGER_QUEUE_BYTES, HlsConfig, LlHlsConfig
from mediacore.packager.fmp4 import fragment, init_segment
from mediacore.packager.parts import ClosedPart, PartCutter
from mediacore.store.ll import LlRendition

log = logging.getLogger(__name__)


class _Track:
    def __init__(self, rendition: LlRendition, track: Track, config: LlHlsConfig, hls: HlsConfig) -> None:
        self.rendition = rendition
        self.track = track
        self.cutter = PartCutter(track.timebase, track.kind is Kind.VIDEO, config.part_duration, hls.segment_duration)
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
    ) -> None:
        self.clock = clock
        self.stream = stream
        self.renditions = renditions
        self.config = config
        self.hls = hls
        self.subscription: Subscription = stream.subscribe(
            "llhls-packager", max_items=hls.queue_frames, max_bytes=PACKAGER_QUEUE_BYTES
        )
        self._tracks: dict[Kind, _Track] = {}
        self._decode_order = DecodeOrder()
        self.parts_made = 0

    async def run(self) -> None:
        try:
            while True:
                item = await self.subscription.get()
                if isinstance(item, Frame):
                    self._on_frame(item)
                elif isinstance(item, (Discontinuity, Unpublished)):
                    self._flush(discontinuity=True)
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
        self._emit(state, state.cutter.push(self._decode_order.fix(frame)))

    def _emit(self, state: _Track, parts: list[ClosedPart]) -> None:
        for part in parts:
            if part.gap:
                data = b""  # a hole in the track: listed as GAP=YES, nothing to write
            else:
                state.sequence += 1
                data = fragment(part.samples, part.base_dts, state.sequence)
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
            )
            self.parts_made += 1

    def _flush(self, discontinuity: bool) -> None:
        for state in self._tracks.values():
            self._emit(state, state.cutter.flush())
            if discontinuity:
                state.rendition.mark_discontinuity()
        self._decode_order.reset()

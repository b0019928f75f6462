"""Where LL-HLS parts and parent segments end: a pure function of the frames.

A frame's duration is only known when the next frame of its track arrives, so each
rendition holds one frame back. Rules:
- A part closes once it holds at least the nominal part duration less half a frame, so
  it never exceeds PART-TARGET (declared 10 % above nominal) and full parts stay above
  85 % of it (L5).
- Video: a new parent starts only at a keyframe whose parent-so-far is at least the
  segment duration (20 ms tolerance); the part before it is the parent's last and may be
  short (L5 allows it). Audio: a parent closes at the first part boundary past the next
  multiple of the segment duration since the rendition began, so audio parents average
  exactly the segment duration and stay aligned with video's (I3) instead of drifting.
- Video before the first keyframe is dropped: every parent starts with an IDR (L8, E3).
- A hole in a track (RTP loss took a keyframe and its GOP, or a run of audio packets)
  must not become one sample seconds long, which would break PART-TARGET and
  TARGETDURATION (L5, T2), nor be skipped, which would put the playlist's timeline behind
  the media's and lose players that line renditions up by it. When a sync sample arrives
  more than four frame intervals (and a part) after the frame before it, that frame keeps
  one interval, its part and parent end there, and the hole is filled with GAP parts
  (GAP=YES, no data) in parents of their own (EXT-X-GAP), at most the segment duration
  each; the sample after the hole starts a new parent at its own decode time. A sample
  that arrives a frame or two late closes the part before it rather than push it past
  PART-TARGET.
- GAP parts fill at most one segment duration: a longer hole (whatever sample follows it)
  is a new timeline. The cutter closes what it holds, as `flush()` does, and raises
  `new_timeline`, on which the packager marks EXT-X-DISCONTINUITY in every rendition; video
  resumes at a keyframe. The work and the playlist lines a hole costs stay bounded whatever
  the timestamps say.
- A parent no keyframe closes (the publisher sends none, or its timestamps are frozen) ends
  once it spans `max_parent_ticks` (3 x TARGETDURATION, mediacore/packager/timeline.py) or holds
  `max_parent_bytes`; video then resumes at the next keyframe (L8), and the frames dropped
  until it leave a hole like any other (GAP parts, or a new timeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediacore.model.media import Frame
from mediacore.packager.config import FRAME_OVERHEAD_BYTES, HlsConfig
from mediacore.packager.fmp4 import Sample
from mediacore.packager.timeline import segment_limit

TOLERANCE_SECONDS = 0.02
_DEFAULTS = HlsConfig()


def declared_part_target(part_duration: float) -> float:
    """PART-TARGET, 10 % above the nominal part duration, in whole milliseconds."""
    return round(part_duration * 1.1, 3)


@dataclass(slots=True)
class ClosedPart:
    samples: list[Sample]
    base_dts: int  # decode time of the first sample, track ticks
    duration: int  # ticks
    independent: bool
    wallclock: float  # wall-clock time of the part's first frame
    ends_parent: bool = False
    starts_parent: bool = False
    gap: bool = False  # no samples: a hole in the track's timeline (GAP=YES)


@dataclass(slots=True)
class _Open:
    samples: list[Sample] = field(default_factory=list)
    base_dts: int = 0
    duration: int = 0
    wallclock: float = 0.0


class PartCutter:
    def __init__(
        self,
        timebase: int,
        video: bool,
        part_duration: float,
        segment_duration: float,
        max_parent_bytes: int = _DEFAULTS.max_segment_bytes,
    ) -> None:
        self.timebase = timebase
        self.video = video
        self.part_ticks = round(part_duration * timebase)
        self.max_part_ticks = int(declared_part_target(part_duration) * timebase)  # PART-TARGET, in ticks
        self.segment_ticks = round(segment_duration * timebase)
        self.tolerance = round(TOLERANCE_SECONDS * timebase)
        # The longest parent, in ticks (mediacore/packager/timeline.py): the packager sets it
        # from the renditions' TARGETDURATION once the first parent has fixed that.
        self.max_parent_ticks = round(segment_limit(_DEFAULTS.max_timestamp_jump, None, segment_duration) * timebase)
        self.max_parent_bytes = max_parent_bytes
        self._pending: Frame | None = None
        self._part: _Open | None = None
        self._parent_ticks = 0
        self._parent_bytes = 0
        self._parent_open = False
        self._last_duration = 0
        self._elapsed = 0  # ticks since the rendition (or its last discontinuity) began
        self._parents = 0
        self._resume: tuple[int, float] | None = None  # (decode time, wall clock) where a cut parent's media ended
        self.holes = 0  # holes in the track filled with GAP parts (see the module docstring)
        self.new_timeline = False  # the frame just pushed begins a new timeline: mark a discontinuity
        self.new_timelines = 0
        self.keyframe_cuts = 0  # parents cut at max_parent_ticks without a keyframe
        self.byte_cuts = 0  # parents cut at max_parent_bytes
        self.dropped = 0  # video frames dropped after a cut, waiting for a keyframe

    def push(self, frame: Frame) -> list[ClosedPart]:
        self.new_timeline = False
        if self._pending is None:
            return self._begin(frame)
        previous = self._pending
        duration = frame.dts - previous.dts
        if duration - self._last_duration > self.segment_ticks + self.tolerance:
            # A hole longer than GAP parts may fill: a new timeline (see the module docstring).
            closed = self.flush()
            closed += self._begin(frame)
            self.new_timeline = True
            self.new_timelines += 1
            return closed
        skipped = 0
        if frame.keyframe and self._last_duration > 0 and duration > max(4 * self._last_duration, self.part_ticks):
            skipped = duration - self._last_duration  # a hole: see the module docstring
            duration = self._last_duration
            self.holes += 1
        elif duration <= 0:
            duration = self._last_duration or 1
        self._last_duration = duration
        closed = []
        if self._part is not None and self._part.duration + duration > self.max_part_ticks:
            closed += self._close_part(ends_parent=self._audio_parent_due())  # a late sample: never past PART-TARGET
        closed += self._append(previous, duration)
        self._pending = frame
        # Boundaries are decided before `frame` joins a part.
        if skipped:
            closed += self._close_part(ends_parent=True)
            closed += self._gap(previous.dts + duration, skipped, previous.wallclock + duration / self.timebase)
        elif self.video and frame.keyframe and self._parent_ticks >= self.segment_ticks - self.tolerance:
            closed += self._close_part(ends_parent=True)
        elif self._parent_ticks >= self.max_parent_ticks or self._parent_bytes >= self.max_parent_bytes:
            closed += self._cut_parent(frame, previous.dts + duration, previous.wallclock + duration / self.timebase)
        elif self._part is not None and self._part.duration >= self.part_ticks - duration // 2:
            closed += self._close_part(ends_parent=self._audio_parent_due())
        return closed

    def _begin(self, frame: Frame) -> list[ClosedPart]:
        """The first frame after a start, a flush or a cut: video waits for a keyframe; a hole
        since a cut parent's media ended is filled with GAP parts, or begins a new timeline."""
        if self.video and not self._parent_open and not frame.keyframe:
            if self._resume is not None:
                self.dropped += 1
            return []
        closed: list[ClosedPart] = []
        if self._resume is not None:
            end, wallclock = self._resume
            self._resume = None
            hole = frame.dts - end
            if hole > self.segment_ticks + self.tolerance:
                self.new_timeline = True
                self.new_timelines += 1
                self._elapsed = 0
                self._parents = 0
            elif hole > self.tolerance:
                closed = self._gap(end, hole, wallclock)
                self.holes += 1
        self._pending = frame
        return closed

    def _cut_parent(self, frame: Frame, end: int, wallclock: float) -> list[ClosedPart]:
        """The parent reached max_parent_ticks or max_parent_bytes before a keyframe closed it:
        it ends here; video resumes at a keyframe (L8), audio at the next frame."""
        if self._parent_bytes >= self.max_parent_bytes:
            self.byte_cuts += 1
        else:
            self.keyframe_cuts += 1
        closed = self._close_part(ends_parent=True)
        if not self.video:
            self._parents = self._elapsed // self.segment_ticks  # the next parent ends on the grid again
        elif not frame.keyframe:
            self._pending = None
            self._resume = (end, wallclock)
            self.dropped += 1
        return closed

    def _gap(self, start: int, ticks: int, wallclock: float) -> list[ClosedPart]:
        """GAP parts covering [start, start + ticks), in parents of at most the segment
        duration; the elapsed time (the audio grid) counts the hole."""
        parts: list[ClosedPart] = []
        end = start + ticks
        t = start
        while t < end:
            parent_end = min(t + self.segment_ticks, end)
            first = True
            while t < parent_end:
                d = min(self.part_ticks, parent_end - t)
                parts.append(
                    ClosedPart(
                        [],
                        t,
                        d,
                        False,
                        wallclock + (t - start) / self.timebase,
                        ends_parent=t + d >= parent_end,
                        starts_parent=first,
                        gap=True,
                    )
                )
                first = False
                t += d
        self._elapsed += ticks
        self._parents = self._elapsed // self.segment_ticks  # the next audio parent ends on the grid again
        self._parent_open = False
        self._parent_ticks = 0
        self._parent_bytes = 0
        return parts

    def _audio_parent_due(self) -> bool:
        due = (self._parents + 1) * self.segment_ticks - self.part_ticks // 2
        return not self.video and self._elapsed >= due

    def _append(self, frame: Frame, duration: int) -> list[ClosedPart]:
        if self._part is None:
            self._part = _Open([], frame.dts, 0, frame.wallclock)
        self._part.samples.append(Sample(duration, frame.data, frame.keyframe, frame.pts - frame.dts))
        self._part.duration += duration
        self._parent_ticks += duration
        self._parent_bytes += len(frame.data) + FRAME_OVERHEAD_BYTES
        self._elapsed += duration
        return []

    def _close_part(self, ends_parent: bool) -> list[ClosedPart]:
        part = self._part
        if part is None or not part.samples:
            return []
        self._part = None
        starts_parent = not self._parent_open
        self._parent_open = not ends_parent
        if ends_parent:
            self._parent_ticks = 0
            self._parent_bytes = 0
            self._parents += 1
        independent = part.samples[0].keyframe
        return [
            ClosedPart(
                part.samples, part.base_dts, part.duration, independent, part.wallclock, ends_parent, starts_parent
            )
        ]

    def flush(self) -> list[ClosedPart]:
        """Close everything (publisher left, discontinuity): the held frame gets the last
        known frame duration."""
        closed: list[ClosedPart] = []
        if self._pending is not None:
            closed += self._append(self._pending, self._last_duration or round(self.timebase / 30))
            self._pending = None
        closed += self._close_part(ends_parent=True)
        self._parent_open = False
        self._parent_ticks = 0
        self._parent_bytes = 0
        self._elapsed = 0
        self._parents = 0
        self._resume = None
        return closed

"""Where segments begin and end: a pure function of the frames, no I/O, no clock.

Rules:
- With video, a segment starts only at a video keyframe (HLS E3) and closes at the first
  keyframe whose presentation time is `segment_duration` or more after the segment's first
  (90 kHz ticks), less a 20 ms tolerance: millisecond clocks put a 2 s keyframe interval
  at 1.995 s, which must still cut. PTS, not DTS: encoders with B-frames jitter the DTS
  of keyframes by tens of milliseconds while their PTS stays on the frame grid. Audio frames go to the
  segment that is open when they arrive (RTMP and RTP senders interleave by time).
- Audio-only streams cut on any frame past the target.
- Video before the first keyframe is dropped: a segment must be decodable on its own.
  Audio that arrives ahead of the first keyframe (encoders send it first) is held, and
  the part that presents at or after the keyframe joins the first segment.
- A discontinuity (republish, codec change) closes the open segment and flags the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediacore.media import Frame, Kind
from mediacore.wrap import rescale


@dataclass(slots=True)
class SegmentDraft:
    frames: list[Frame] = field(default_factory=list)
    start_90k: int = 0
    end_90k: int = 0  # exclusive; set when the segment closes
    discontinuity: bool = False
    wallclock: float = 0.0  # wall-clock time of the first presented sample

    @property
    def duration(self) -> float:
        return (self.end_90k - self.start_90k) / 90000.0


BOUNDARY_TOLERANCE_90K = 1800  # 20 ms: below one frame at up to 50 fps


def _t90(frame: Frame) -> int:
    tb = frame.track.timebase
    return frame.dts if tb == 90000 else rescale(frame.dts, tb, 90000)


def _pts90(frame: Frame) -> int:
    tb = frame.track.timebase
    return frame.pts if tb == 90000 else rescale(frame.pts, tb, 90000)


class Segmenter:
    def __init__(self, segment_duration: float, has_video: bool = True) -> None:
        self.target_90k = int(round(segment_duration * 90000))
        self.has_video = has_video
        self._open: SegmentDraft | None = None
        self._pending_discontinuity = False
        self._last_video_dts: int | None = None
        self._video_step = 3000  # 90 kHz ticks between video frames, learned as we go
        self._early_audio: list[Frame] = []

    def push(self, frame: Frame) -> SegmentDraft | None:
        """Add a frame; returns the segment it closed, if any."""
        is_video = frame.track.kind is Kind.VIDEO
        if is_video:
            dts = _t90(frame)
            if self._last_video_dts is not None and dts > self._last_video_dts:
                self._video_step = min(dts - self._last_video_dts, 90000)
            self._last_video_dts = dts
        boundary = frame.keyframe if (is_video or not self.has_video) else False
        t = _pts90(frame)
        current = self._open
        if current is None:
            if not boundary:
                if not is_video and len(self._early_audio) < 256:
                    self._early_audio.append(frame)
                return None  # nothing decodable yet
            self._start(frame, t)
            if self._early_audio:
                early = [f for f in self._early_audio if _pts90(f) >= t - BOUNDARY_TOLERANCE_90K]
                self._open.frames[1:1] = early  # type: ignore[union-attr]
                self._early_audio = []
            return None
        if boundary and t - current.start_90k >= self.target_90k - BOUNDARY_TOLERANCE_90K:
            current.end_90k = t
            self._start(frame, t)
            return current
        current.frames.append(frame)
        return None

    def _start(self, frame: Frame, t: int) -> None:
        self._open = SegmentDraft([frame], t, 0, self._pending_discontinuity, frame.wallclock)
        self._pending_discontinuity = False

    def flush(self) -> SegmentDraft | None:
        """Close the open segment now (publisher left); its end is one frame past its last."""
        current = self._open
        self._open = None
        if current is None:
            return None
        if self.has_video:
            last = max(_pts90(f) for f in current.frames if f.track.kind is Kind.VIDEO)
            current.end_90k = last + self._video_step
        else:
            last_frame = current.frames[-1]
            current.end_90k = _t90(last_frame) + rescale(1024, last_frame.track.timebase, 90000)
        return current

    def discontinuity(self) -> SegmentDraft | None:
        """Close the open segment; the next one starts a new timeline segment."""
        closed = self.flush()
        self._pending_discontinuity = True
        self._last_video_dts = None
        return closed

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
- When video stalls (RTP loss took a keyframe, and the depacketizer drops everything up
  to the next one), waiting for a keyframe would stretch the segment past TARGETDURATION
  (T2, a MUST). Once the segment has reached its target and no video has come for
  `stall` (1 s, or four frame intervals at low frame rates), or a keyframe arrives that
  would close a segment longer than the target + 0.5 s, the segment is cut where its
  video ends, and the audio after that goes into segments of at most the target. These
  start with audio; the first video in them must be a keyframe (E3), so video before
  one is dropped and counted, and that keyframe closes the audio segment at once.
- A segment no keyframe closes (the publisher sends none) is cut once it spans `max_90k`
  (3 x TARGETDURATION, mediacore/packager/timeline.py) or holds `max_bytes` (frozen
  timestamps never reach a duration): it ends where its media ends, video then resumes at a
  keyframe as after a stall, and audio meanwhile goes into segments of its own. With no
  audio to carry the timeline, the segment at that keyframe is flagged as a discontinuity
  (the dropped frames left a hole).
- No segment lasts longer than `max_90k`: a keyframe (or a stall cut) that would close one
  across a longer hole or jump ends it where its media ends instead, and the next segment is
  flagged as a discontinuity. EXTINF stays bounded whatever the timestamps say.
- A discontinuity (republish, codec change, a timestamp jump) closes the open segment and
  flags the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediacore.model.media import Frame, Kind
from mediacore.model.timebase import rescale
from mediacore.packager.config import FRAME_OVERHEAD_BYTES, HlsConfig
from mediacore.packager.timeline import segment_limit


@dataclass(slots=True)
class SegmentDraft:
    frames: list[Frame] = field(default_factory=list)
    start_90k: int = 0
    end_90k: int = 0  # exclusive; set when the segment closes
    discontinuity: bool = False
    wallclock: float = 0.0  # wall-clock time of the first presented sample
    audio_start: bool = False  # opened by an audio frame while video was stalled

    @property
    def duration(self) -> float:
        return (self.end_90k - self.start_90k) / 90000.0


BOUNDARY_TOLERANCE_90K = 1800  # 20 ms: below one frame at up to 50 fps
VIDEO_STALL_90K = 90000  # 1 s without video: past the skew RTP jitter buffers put between tracks
HALF_SECOND_90K = 45000  # EXTINF may exceed TARGETDURATION by less than this (rounding, T2)
_DEFAULTS = HlsConfig()


def _t90(frame: Frame) -> int:
    tb = frame.track.timebase
    return frame.dts if tb == 90000 else rescale(frame.dts, tb, 90000)


def _pts90(frame: Frame) -> int:
    tb = frame.track.timebase
    return frame.pts if tb == 90000 else rescale(frame.pts, tb, 90000)


def media_bytes(frames: list[Frame]) -> int:
    """The payload bytes of `frames`."""
    return sum(len(f.data) for f in frames)


def _weight(frames: list[Frame]) -> int:
    return media_bytes(frames) + FRAME_OVERHEAD_BYTES * len(frames)


class Segmenter:
    def __init__(
        self, segment_duration: float, has_video: bool = True, max_bytes: int = _DEFAULTS.max_segment_bytes
    ) -> None:
        self.target_90k = int(round(segment_duration * 90000))
        self.has_video = has_video
        # The longest segment, in 90 kHz ticks (mediacore/packager/timeline.py): the packager
        # sets it from the store's TARGETDURATION once the first segment has fixed that.
        self.max_90k = round(segment_limit(_DEFAULTS.max_timestamp_jump, None, segment_duration) * 90000)
        self.max_bytes = max_bytes
        self._open: SegmentDraft | None = None
        self._open_bytes = 0
        self._pending_discontinuity = False
        self._last_video_dts: int | None = None
        self._video_step = 3000  # 90 kHz ticks between video frames, learned as we go
        self._early_audio: list[Frame] = []
        self._await_keyframe = False  # a segment was cut without a keyframe: video resumes at one
        self._resume_90k: int | None = None  # where media ended at a cut with nothing left open
        self.stall_cuts = 0
        self.dropped_video = 0
        self.keyframe_cuts = 0  # segments cut at max_90k without a keyframe
        self.byte_cuts = 0  # segments cut at max_bytes without a keyframe
        self.bounded = 0  # segments ended where their media ends, not across a hole or jump

    def push(self, frame: Frame) -> list[SegmentDraft]:
        """Add a frame; returns the segments it closed (usually none or one)."""
        is_video = frame.track.kind is Kind.VIDEO
        if is_video:
            if self._await_keyframe:
                if not frame.keyframe:
                    self.dropped_video += 1  # its references are in an earlier segment
                    return []
                self._await_keyframe = False
            dts = _t90(frame)
            if self._last_video_dts is not None and 0 < dts - self._last_video_dts <= 90000:
                self._video_step = dts - self._last_video_dts  # a longer step is a hole, not a frame rate
            self._last_video_dts = dts
        boundary = frame.keyframe if (is_video or not self.has_video) else False
        t = _pts90(frame)
        current = self._open
        if current is None:
            if boundary:
                opened = self._start(frame, t)
                if self._resume_90k is not None and t - self._resume_90k > BOUNDARY_TOLERANCE_90K:
                    opened.discontinuity = True  # the video dropped since a cut left a hole
                self._resume_90k = None
                if self._early_audio:
                    early = [f for f in self._early_audio if _pts90(f) >= t - BOUNDARY_TOLERANCE_90K]
                    opened.frames[1:1] = early
                    self._open_bytes += _weight(early)
                    self._early_audio = []
                return []
            if not is_video and self._resume_90k is not None:
                self._resume_90k = None  # cut without a keyframe: the audio goes on in a segment of its own
                self._start(frame, t, audio_start=True)
                return []
            if not is_video and len(self._early_audio) < 256:
                self._early_audio.append(frame)
            return []  # nothing decodable yet
        elapsed = t - current.start_90k
        reached = elapsed >= self.target_90k - BOUNDARY_TOLERANCE_90K
        if boundary and (reached or (current.audio_start and elapsed > 0)):
            closed = self._split_at_video_end() if elapsed > self.target_90k + HALF_SECOND_90K else [current]
            closed[-1].end_90k = t
            self._start(frame, t)
            return self._bound(closed)
        if not is_video and self.has_video and reached and self._video_stalled(_t90(frame)):
            current.frames.append(frame)
            closed = self._split_at_video_end()
            self._open = closed.pop()  # the audio since the video ended (this frame's piece) stays open
            self._open_bytes = _weight(self._open.frames)
            self._await_keyframe = True
            self.stall_cuts += 1
            return self._bound(closed)
        current.frames.append(frame)
        self._open_bytes += len(frame.data) + FRAME_OVERHEAD_BYTES
        if self._open_bytes >= self.max_bytes:
            self.byte_cuts += 1
            return self._cut_without_keyframe()
        if elapsed >= self.max_90k:
            self.keyframe_cuts += 1
            return self._cut_without_keyframe()
        return []

    def _cut_without_keyframe(self) -> list[SegmentDraft]:
        """The open segment reached max_90k or max_bytes: it ends where its media ends; video
        resumes at a keyframe, and audio meanwhile starts a segment of its own."""
        current = self._open
        assert current is not None
        self._open = None
        self._open_bytes = 0
        current.end_90k = self._media_end(current)
        if self.has_video:
            self._await_keyframe = True
            self._resume_90k = current.end_90k
        return [current]

    def _media_end(self, draft: SegmentDraft) -> int:
        """One frame past the draft's last video frame (its last audio frame when it has no
        video), never more than max_90k after its start nor before it."""
        video = [_pts90(f) for f in draft.frames if f.track.kind is Kind.VIDEO]
        if video:
            end = max(video) + self._video_step
        else:
            last_frame = draft.frames[-1]
            end = _t90(last_frame) + rescale(1024, last_frame.track.timebase, 90000)
        return min(max(end, draft.start_90k + 1), draft.start_90k + self.max_90k)

    def _bound(self, closed: list[SegmentDraft]) -> list[SegmentDraft]:
        """No closed segment lasts longer than max_90k: one that would (a hole or a jump before
        the frame that closed it) ends where its media ends, and what follows it is a
        discontinuity."""
        for i, draft in enumerate(closed):
            if draft.end_90k - draft.start_90k > self.max_90k:
                draft.end_90k = self._media_end(draft)
                self.bounded += 1
                following = closed[i + 1] if i + 1 < len(closed) else self._open
                if following is not None:
                    following.discontinuity = True
                else:
                    self._pending_discontinuity = True
        return closed

    def _video_stalled(self, audio_dts: int) -> bool:
        if self._last_video_dts is None:
            return False
        return audio_dts - self._last_video_dts >= max(VIDEO_STALL_90K, 4 * self._video_step)

    def _split_at_video_end(self) -> list[SegmentDraft]:
        """The open segment, cut where its video ends: the video and the audio presented with
        it, then the audio after it in pieces of at most the target (HLS T2). Audio pieces
        start segments flagged `audio_start`; the last piece is returned open (end_90k 0)."""
        current = self._open
        assert current is not None
        video = sorted(_pts90(f) for f in current.frames if f.track.kind is Kind.VIDEO)
        if len(video) > 2:  # the frame interval: the median step between presentation times
            step = sorted(b - a for a, b in zip(video, video[1:]))[(len(video) - 1) // 2]
        else:
            step = self._video_step
        video_end = video[-1] + step if video else current.start_90k
        head = [f for f in current.frames if f.track.kind is Kind.VIDEO or _pts90(f) < video_end]
        tail = [f for f in current.frames if f.track.kind is not Kind.VIDEO and _pts90(f) >= video_end]
        pieces: list[SegmentDraft] = []
        if head:
            pieces.append(
                SegmentDraft(head, current.start_90k, 0, current.discontinuity, current.wallclock, current.audio_start)
            )
        for frame in tail:
            t = _pts90(frame)
            if (
                pieces
                and pieces[-1].audio_start
                and t - pieces[-1].start_90k < self.target_90k - BOUNDARY_TOLERANCE_90K
            ):
                pieces[-1].frames.append(frame)
                continue
            if pieces:
                pieces[-1].end_90k = t
            pieces.append(SegmentDraft([frame], t, 0, not pieces and current.discontinuity, frame.wallclock, True))
        if not pieces:  # nothing at all: keep the (empty) segment open as it was
            return [current]
        return pieces

    def _start(self, frame: Frame, t: int, audio_start: bool = False) -> SegmentDraft:
        opened = self._open = SegmentDraft([frame], t, 0, self._pending_discontinuity, frame.wallclock, audio_start)
        self._open_bytes = len(frame.data) + FRAME_OVERHEAD_BYTES
        self._pending_discontinuity = False
        return opened

    def flush(self) -> SegmentDraft | None:
        """Close the open segment now (publisher left); its end is one frame past its last."""
        current = self._open
        self._open = None
        self._open_bytes = 0
        if current is None:
            return None
        current.end_90k = self._media_end(current)
        return current

    def discontinuity(self) -> SegmentDraft | None:
        """Close the open segment; the next one starts a new timeline segment."""
        closed = self.flush()
        self._pending_discontinuity = True
        self._last_video_dts = None
        self._resume_90k = None
        return closed

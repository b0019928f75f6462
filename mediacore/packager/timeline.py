"""How far one timeline may stretch: timestamp jumps, and segments no keyframe closes.

A publisher's clock can jump, forward or backward: an encoder that restarts its clock without
republishing, RTP timestamps that skip, a broken or hostile peer. Spanning the jump would
cost work and memory in proportion to its size, which the publisher picks: a GAP part for
every missing part time, or one segment whose EXTINF is the jump. So a jump of more than
max(`max_timestamp_jump`, JUMP_TDS x TARGETDURATION) in any track starts a new timeline
instead: the packagers close what they hold, mark EXT-X-DISCONTINUITY (M6), and go on from
the frame after the jump. Every track starts over on the new timeline, so the other track
following the jump a frame later is not a second jump.

Raw timestamps are compared, before the DTS nudge (mediacore/model/decode_order.py), which
would turn a backward jump into a run of frames one tick apart. A frame presented more than
the limit away from its decode time (RTMP lets a composition offset reach 2.3 hours) is
presented at its decode time instead: one such PTS would otherwise decide where segments end.

A segment or LL-HLS parent that no keyframe closes (a publisher that sends none) is cut once
it spans MAX_SEGMENT_TDS x TARGETDURATION (mediacore/packager/segmenter.py, parts.py).
Until the first segment has fixed TARGETDURATION the jump limit bounds it instead: a
publisher whose GOP is longer than three times the configured segment duration (x264's
default of 250 frames is 8.3 s) must not lose the end of its first GOP, which sets TD.
"""

from __future__ import annotations

from mediacore.model.media import Frame, Kind
from mediacore.store.window import target_duration as least_target_duration

JUMP_TDS = 3
"""A jump within a track shorter than this many target durations (3 x TD is the least a live
playlist lists, W4) never starts a new timeline."""
MAX_SEGMENT_TDS = 3
"""A segment or parent no keyframe closes is cut at this many target durations."""


def jump_limit(max_timestamp_jump: float, target_duration: int) -> float:
    """Seconds a track's timestamps may jump, either way, and stay on one timeline."""
    return max(max_timestamp_jump, JUMP_TDS * target_duration)


def segment_limit(max_timestamp_jump: float, target_duration: int | None, segment_duration: float) -> float:
    """Seconds a segment or parent may span without a keyframe; `target_duration` is None
    until the first segment fixes it."""
    if target_duration is None:
        return jump_limit(max_timestamp_jump, least_target_duration(0.0, segment_duration))
    return float(MAX_SEGMENT_TDS * target_duration)


class TimelineGuard:
    """Per-stream: which frame jumped away from its track's previous frame."""

    def __init__(self) -> None:
        self._last: dict[Kind, tuple[int, int]] = {}  # kind -> (timebase, raw decode time)
        self.jumps = 0
        self.last_jump = 0.0  # seconds, signed: the most recent jump
        self.bad_offsets = 0  # frames presented at their decode time instead (see the module docstring)

    def jumped(self, frame: Frame, limit: float) -> bool:
        """True when `frame` is more than `limit` seconds from its track's previous frame:
        the caller starts a new timeline, on which every track starts over."""
        kind = frame.track.kind
        timebase = frame.track.timebase
        last = self._last.get(kind)
        self._last[kind] = (timebase, frame.dts)
        if last is None or last[0] != timebase or abs(frame.dts - last[1]) <= limit * timebase:
            return False
        self.jumps += 1
        self.last_jump = (frame.dts - last[1]) / timebase
        self._last = {kind: (timebase, frame.dts)}
        return True

    def presentable(self, frame: Frame, limit: float) -> Frame:
        """`frame`, or a copy presented at its decode time if its PTS is more than `limit`
        seconds from it."""
        if abs(frame.pts - frame.dts) <= limit * frame.track.timebase:
            return frame
        self.bad_offsets += 1
        return Frame(frame.track, frame.dts, frame.dts, frame.keyframe, frame.data, frame.wallclock)

    def reset(self, kind: Kind | None = None) -> None:
        """A new timeline began for another reason (republish, codec change): forget."""
        if kind is None:
            self._last.clear()
        else:
            self._last.pop(kind, None)


def first_of_doubling(count: int) -> bool:
    """Log the 1st, 2nd, 4th, 8th ... occurrence: once, then ever more rarely."""
    return count > 0 and count & (count - 1) == 0

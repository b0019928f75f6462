"""Strictly increasing decode times per track: the one DTS nudge of every packager.

Muxers need strictly increasing DTS per stream; encoders that stamp B-frame DTS in whole
milliseconds repeat values. A repeated or backward DTS is nudged one tick past the previous
one (and PTS kept at or after it), never dropped: a dropped reference frame would break
decoding until the next keyframe.
"""

from __future__ import annotations

from mediacore.model.media import Frame, Kind


class DecodeOrder:
    def __init__(self) -> None:
        self._last: dict[Kind, int] = {}
        self.nudged = 0  # frames whose DTS was moved

    def fix(self, frame: Frame) -> Frame:
        kind = frame.track.kind
        last = self._last.get(kind)
        if last is not None and frame.dts <= last:
            dts = last + 1
            frame = Frame(frame.track, dts, max(frame.pts, dts), frame.keyframe, frame.data, frame.wallclock)
            self.nudged += 1
        self._last[kind] = frame.dts
        return frame

    def reset(self, kind: Kind | None = None) -> None:
        """Forget the previous DTS (a new timeline: discontinuity), for one track or all."""
        if kind is None:
            self._last.clear()
        else:
            self._last.pop(kind, None)

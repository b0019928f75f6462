"""Strictly increasing decode times per track: the one DTS nudge, for the packagers and
for decode times derived from RTP (which carries none).

Muxers need strictly increasing DTS per stream; encoders that stamp B-frame DTS in whole
milliseconds repeat values. A repeated or backward DTS is nudged one tick past the previous
one (and PTS kept at or after it), never dropped: a dropped reference frame would break
decoding until the next keyframe.
"""

from __future__ import annotations

from mediacore.model.media import Frame, Kind


def after(dts: int, last: int | None) -> int:
    """`dts`, or one tick past `last` when it would not come after it."""
    return dts if last is None or dts > last else last + 1


class DecodeOrder:
    def __init__(self) -> None:
        self._last: dict[Kind, int] = {}

    def fix(self, frame: Frame) -> Frame:
        kind = frame.track.kind
        last = self._last.get(kind)
        dts = after(frame.dts, last)
        if dts != frame.dts:
            frame = Frame(frame.track, dts, max(frame.pts, dts), frame.keyframe, frame.data, frame.wallclock)
        self._last[kind] = frame.dts
        return frame

    def reset(self, kind: Kind | None = None) -> None:
        """Forget the previous DTS (a new timeline: discontinuity), for one track or all."""
        if kind is None:
            self._last.clear()
        else:
            self._last.pop(kind, None)

"""RTP access units -> mediacore Frames, per track.

RTP timestamps (32-bit) are unwrapped to 64 bits here. Each track's RTP clock starts at
a random value, so tracks are placed on one session timeline: a track's first timestamp
maps to its wall-clock time relative to the session's first frame. That wall-clock time
comes from the sender's RTCP SR (RTP timestamp <-> NTP time) when one has arrived, else
from the packet's arrival (then within network jitter). RTP carries presentation times
only; H.264 with B-frames also needs decode times, so video frames wait in a small reorder
window (`reorder` frames) and each gets as DTS the n-th smallest PTS seen, less the
window: increasing, never after its PTS, for any GOP whose reordering fits the window.
"""

from __future__ import annotations

import heapq

from mediacore.model.aac import AacError, parse_asc
from mediacore.model.decode_order import after
from mediacore.model.h264 import build_avcc, parse_avcc, parse_sps
from mediacore.model.media import VIDEO_TIMEBASE, Frame, Kind, Track
from mediacore.model.timebase import Unwrapper

from .depacketize import AccessUnit
from .errors import RtpError
from .sdp import MediaDescription


def video_track(sps: bytes, pps: bytes) -> Track:
    record = build_avcc(sps, pps)
    info = parse_sps(sps)
    return Track(Kind.VIDEO, "h264", VIDEO_TIMEBASE, record, parse_avcc(record).codec_string, info.width, info.height)


def audio_track(media: MediaDescription) -> Track:
    config = media.aac_config
    if not config:
        raise RtpError("AAC media without config= in its fmtp")
    return aac_track(config)


def aac_track(config: bytes) -> Track:
    try:
        asc = parse_asc(config)
    except AacError as e:
        raise RtpError(f"bad AAC config: {e}") from e
    return Track(
        Kind.AUDIO, "aac", asc.sample_rate, config, asc.codec_string, sample_rate=asc.sample_rate, channels=asc.channels
    )


class SessionClock:
    """The wall-clock time of a session's first packet, shared by its tracks."""

    START_SECONDS = 10  # every timeline starts here, so decode times before the first frame stay positive

    def __init__(self) -> None:
        self.t0: float | None = None


class RtpToFrames:
    def __init__(self, timebase: int, clock: SessionClock | None = None, reorder: int = 3) -> None:
        self.timebase = timebase
        self.session = clock or SessionClock()
        self._offset: int | None = None
        self.reorder = reorder
        self._clock = Unwrapper(32)
        self._pending: list[tuple[int, AccessUnit]] = []
        self._pts_heap: list[int] = []
        self._step = timebase // 30
        self._last_pts: int | None = None
        self._last_dts: int | None = None
        self._sender_clock: tuple[int, float] | None = None  # (RTP timestamp, unix time) from an SR

    def sender_report(self, rtp_timestamp: int, unix_time: float) -> None:
        """An RTCP SR maps the sender's RTP clock to its wall clock."""
        self._sender_clock = (rtp_timestamp, unix_time)

    def _sender_wall(self, timestamp: int) -> float | None:
        if self._sender_clock is None:
            return None
        sr_ts, sr_wall = self._sender_clock
        delta = ((timestamp - sr_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        return sr_wall + delta / self.timebase

    def _wall(self, pts: int) -> float:
        """Wall-clock time of a presentation time, by the session's one mapping (the first
        frame's time is t0 + START_SECONDS): audio and video agree to the sample, so
        PROGRAM-DATE-TIME runs on whichever track a segment starts with."""
        assert self.session.t0 is not None
        return self.session.t0 + pts / self.timebase - SessionClock.START_SECONDS

    def push(self, track: Track, unit: AccessUnit, now: float) -> list[Frame]:
        """`now` is the arrival wall-clock time (seconds since the epoch). The sender's clock
        from an RTCP SR, when one came, is preferred: it anchors PROGRAM-DATE-TIME and places
        the tracks on one timeline as the sender captured them, whatever the network did."""
        sender_wall = self._sender_wall(unit.timestamp)
        if sender_wall is not None:
            now = sender_wall
        pts = self._clock.unwrap(unit.timestamp)
        if self._offset is None:
            if self.session.t0 is None:
                self.session.t0 = now
            start = round((now - self.session.t0 + SessionClock.START_SECONDS) * self.timebase)
            self._offset = start - pts
        pts += self._offset
        if track.kind is Kind.AUDIO:
            return [Frame(track, pts, pts, True, unit.data, self._wall(pts))]
        if self._last_pts is not None and 0 < abs(pts - self._last_pts) < self._step:
            self._step = abs(pts - self._last_pts)
        self._last_pts = pts
        self._pending.append((pts, unit))
        heapq.heappush(self._pts_heap, pts)
        return self._emit(track, self.reorder)

    def flush(self, track: Track, now: float) -> list[Frame]:
        """The publisher left: the frames held for reordering go out too."""
        return self._emit(track, 0)

    def _emit(self, track: Track, keep: int) -> list[Frame]:
        out = []
        while len(self._pending) > keep:
            pts0, unit0 = self._pending.pop(0)
            dts = heapq.heappop(self._pts_heap) - self.reorder * self._step
            dts = min(after(dts, self._last_dts), pts0)
            self._last_dts = dts
            out.append(Frame(track, dts, pts0, unit0.keyframe, unit0.data, self._wall(pts0)))
        return out

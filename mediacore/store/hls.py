"""Segments and the playlist of one live HLS (MPEG-TS) stream, in memory.

The window and TARGETDURATION follow mediacore/store/window.py. A segment's URI never
changes (M4) and carries a per-session id (mediacore/playlist/uris.py). The rendered
playlist is cached and replaced atomically on each change (W3). Time (`now`, monotonic
seconds) is passed in.

Date ranges (timed metadata) arrive with the segment they start in and are listed before it
for as long as it is in the window; every segment carries PROGRAM-DATE-TIME, which they
need (D2).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mediacore.playlist.daterange import DateRange
from mediacore.playlist.media import MediaPlaylist, Segment
from mediacore.playlist.uris import hls_segment_uri
from mediacore.store.window import SlidingWindow, Windowed, target_duration


@dataclass(frozen=True, slots=True)
class StoredSegment:
    msn: int
    uri: str
    duration: float
    data: bytes | memoryview  # a muxer's read-only view (mediacore/packager/ts.py)
    program_date_time: float
    discontinuity: bool
    dateranges: tuple[DateRange, ...] = ()


class HlsStore(Windowed[StoredSegment]):
    def __init__(
        self,
        window_segments: int = 8,
        segment_duration: float = 2.0,
        media_sequence: int = 0,
        discontinuity_sequence: int = 0,
    ) -> None:
        """`segment_duration` is the configured one: TARGETDURATION is never below it."""
        self.window: SlidingWindow[StoredSegment] = SlidingWindow(
            window_segments, media_sequence, discontinuity_sequence
        )
        self.segment_duration = segment_duration
        self.session_id = secrets.token_hex(4)
        self.target_duration: int | None = None
        self.next_msn = media_sequence
        self._retired: dict[str, tuple[StoredSegment, float]] = {}
        self._by_uri: dict[str, StoredSegment] = {}
        self.ended = False
        self._pending_discontinuity = False
        self._playlist_text: str | None = None
        self.version = 0
        self.bytes_total = 0

    @property
    def ready(self) -> bool:
        return bool(self.window) and self.target_duration is not None

    def add_segment(
        self,
        duration: float,
        data: bytes | memoryview,
        program_date_time: float,
        discontinuity: bool,
        now: float,
        dateranges: Sequence[DateRange] = (),
    ) -> StoredSegment:
        """A new segment; `dateranges` start in it and are listed before it."""
        if self.ended:
            raise RuntimeError("segment added to an ended playlist")
        if self.target_duration is None:
            self.target_duration = target_duration(duration, self.segment_duration)
        discontinuity = discontinuity or self._pending_discontinuity
        self._pending_discontinuity = False
        msn = self.next_msn
        self.next_msn += 1
        seg = StoredSegment(
            msn,
            hls_segment_uri(self.session_id, msn),
            duration,
            data,
            program_date_time,
            discontinuity,
            tuple(dateranges),
        )
        self._by_uri[seg.uri] = seg
        self.bytes_total += len(data)
        for head, retention in self.window.append(seg, self.target_duration):
            del self._by_uri[head.uri]
            self._retired[head.uri] = (head, now + retention)
        for uri, (_, expires) in list(self._retired.items()):
            if expires <= now:
                del self._retired[uri]
        self._publish()
        return seg

    def break_timeline(self) -> None:
        """The media stops here and resumes later on a new timeline (the packager was
        restarted after an error and waits for a keyframe): the next segment carries
        EXT-X-DISCONTINUITY (M6), and MEDIA-SEQUENCE simply continues."""
        self._pending_discontinuity = True

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._publish()

    def _publish(self) -> None:
        self._playlist_text = None
        self.version += 1

    def playlist(self) -> MediaPlaylist:
        assert self.target_duration is not None
        return MediaPlaylist(
            target_duration=self.target_duration,
            version=3,  # P5: decimal EXTINF needs 3; nothing here needs more
            media_sequence=self.media_sequence,
            discontinuity_sequence=self.discontinuity_sequence,
            independent_segments=True,  # I1, I2: every segment starts with an IDR
            segments=[
                Segment(
                    s.msn,
                    s.uri,
                    s.duration,
                    s.program_date_time,
                    s.discontinuity,
                    dateranges=[(0, dr) for dr in s.dateranges],
                )
                for s in self.window.segments
            ],
            ended=self.ended,
        )

    def playlist_text(self) -> str:
        if self._playlist_text is None:
            self._playlist_text = self.playlist().render()
        return self._playlist_text

    def latest_daterange(self, cls: str) -> DateRange | None:
        """The date range of class `cls` that starts last among the segments in the window, if
        it has not ended by the live edge (the end of the newest segment): a stream's pinned
        product card. None when there is none, or the newest one is over."""
        segments = self.window.segments
        latest = max(
            (dr for seg in segments for dr in seg.dateranges if dr.cls == cls),
            key=lambda dr: dr.start_date,
            default=None,
        )
        if latest is None or latest.duration is None:
            return latest
        edge = segments[-1].program_date_time + segments[-1].duration
        return latest if latest.start_date + latest.duration > edge else None

    def held_bytes(self) -> int:
        """Bytes of media held: the listed segments and the retired ones still downloadable
        (W5; an expired one until the next segment prunes it)."""
        listed = sum(len(s.data) for s in self.window.segments)
        return listed + sum(len(seg.data) for seg, _ in self._retired.values())

    def get_segment(self, uri: str, now: float) -> StoredSegment | None:
        seg = self._by_uri.get(uri)
        if seg is not None:
            return seg
        retired = self._retired.get(uri)
        if retired is not None and retired[1] > now:
            return retired[0]
        return None

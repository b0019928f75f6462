"""Segments and playlists of live streams, in memory.

The store owns the sliding window and its rules:
- Segments leave the playlist only from the head, one MEDIA-SEQUENCE step each (M2, M3),
  never leaving fewer than `window_segments` (>= 6, A8.11) nor less than 3 x TD (W4).
- A removed segment stays downloadable for its duration plus the playlist's duration (W5).
- A removed DISCONTINUITY increments DISCONTINUITY-SEQUENCE (M5).
- A segment's URI never changes (M4); URIs carry a per-session id so no cache can confuse a
  restarted stream's segment 0 with an older one.
- The rendered playlist is cached and replaced atomically on each change (W3).
Time (`now`, monotonic seconds) is passed in.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

from mediacore.packager.playlist import MediaPlaylist, SegmentEntry


@dataclass(frozen=True, slots=True)
class StoredSegment:
    msn: int
    uri: str
    duration: float
    data: bytes
    program_date_time: float
    discontinuity: bool
    added_at: float


class HlsStore:
    def __init__(
        self,
        window_segments: int = 8,
        media_sequence: int = 0,
        discontinuity_sequence: int = 0,
    ) -> None:
        self.window_segments = window_segments
        self.session_id = secrets.token_hex(4)
        self.target_duration: int | None = None
        self.media_sequence = media_sequence
        self.discontinuity_sequence = discontinuity_sequence
        self.next_msn = media_sequence
        self.segments: deque[StoredSegment] = deque()
        self._retired: dict[str, tuple[StoredSegment, float]] = {}
        self._by_uri: dict[str, StoredSegment] = {}
        self.ended = False
        self._playlist_text: str | None = None
        self.version = 0
        self.bytes_total = 0

    def segment_uri(self, msn: int) -> str:
        return f"{self.session_id}-{msn}.ts"

    @property
    def ready(self) -> bool:
        return bool(self.segments) and self.target_duration is not None

    def add_segment(
        self, duration: float, data: bytes, program_date_time: float, discontinuity: bool, now: float
    ) -> StoredSegment:
        if self.ended:
            raise RuntimeError("segment added to an ended playlist")
        if self.target_duration is None:
            raise RuntimeError("target duration must be fixed before the first segment")
        msn = self.next_msn
        self.next_msn += 1
        seg = StoredSegment(msn, self.segment_uri(msn), duration, data, program_date_time, discontinuity, now)
        self.segments.append(seg)
        self._by_uri[seg.uri] = seg
        self.bytes_total += len(data)
        self._slide(now)
        self._publish()
        return seg

    def _playlist_duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def _slide(self, now: float) -> None:
        td = self.target_duration or 0
        while len(self.segments) > self.window_segments:
            head = self.segments[0]
            if self._playlist_duration() - head.duration < 3 * td:
                break
            self.segments.popleft()
            self.media_sequence += 1
            if head.discontinuity:
                self.discontinuity_sequence += 1
            del self._by_uri[head.uri]
            # W5: available for its duration plus the longest playlist duration served
            # (the playlist as it was just before this removal).
            served = self._playlist_duration() + head.duration
            expires = now + head.duration + served
            self._retired[head.uri] = (head, expires)
        for uri, (_, expires) in list(self._retired.items()):
            if expires <= now:
                del self._retired[uri]

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
            media_sequence=self.media_sequence,
            discontinuity_sequence=self.discontinuity_sequence,
            segments=[
                SegmentEntry(s.uri, s.duration, s.program_date_time, s.discontinuity) for s in self.segments
            ],
            ended=self.ended,
        )

    def playlist_text(self) -> str:
        if self._playlist_text is None:
            self._playlist_text = self.playlist().render()
        return self._playlist_text

    def get_segment(self, uri: str, now: float) -> StoredSegment | None:
        seg = self._by_uri.get(uri)
        if seg is not None:
            return seg
        retired = self._retired.get(uri)
        if retired is not None and retired[1] > now:
            return retired[0]
        return None

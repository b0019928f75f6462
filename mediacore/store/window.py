"""The sliding window of a live playlist and the TARGETDURATION rule: one of each, for the
HLS store and every LL-HLS rendition.

- Segments leave only from the head, one MEDIA-SEQUENCE step each (M2, M3), never leaving
  fewer than `min_segments` (>= 6, A8.11) nor less than 3 x TD listed (W4), and never
  listing more than MAX_LISTED_FACTOR x `min_segments`: segments far shorter than the target
  (a publisher whose timestamps do not advance) must not pile up without limit to make 3 x TD.
- A removed DISCONTINUITY increments DISCONTINUITY-SEQUENCE (M5).
- A removed segment stays downloadable for its duration plus the longest playlist duration
  served while it was listed (W5), and its LL-HLS parts at least 3 x TD (G2).
- TARGETDURATION is fixed once (T3), from the first segment with headroom for timestamp
  jitter, never below the configured segment duration (T1, T2).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, Protocol, TypeVar

from mediacore.model.timebase import round_half_up

TD_HEADROOM = 0.25
"""Seconds added to the first segment before rounding: encoders' timestamp jitter must not
make a later segment of the same GOP length round above TARGETDURATION."""


MIN_LISTED_TDS = 3
"""A live playlist lists at least this many target durations of media (W4)."""
MAX_LISTED_FACTOR = 3
"""A live playlist lists at most this many times its minimum of segments: W4 gives way only to
segments far shorter than the target (frozen timestamps), whose memory would otherwise grow
without limit."""


def target_duration(first_segment: float, configured_segment: float) -> int:
    """TARGETDURATION for a playlist whose first segment lasted `first_segment` seconds."""
    return max(round_half_up(configured_segment), round_half_up(first_segment + TD_HEADROOM), 1)


class Listed(Protocol):
    @property
    def duration(self) -> float: ...

    @property
    def discontinuity(self) -> bool: ...


S = TypeVar("S", bound=Listed)


class SlidingWindow(Generic[S]):
    def __init__(self, min_segments: int, media_sequence: int = 0, discontinuity_sequence: int = 0) -> None:
        self.min_segments = min_segments
        self.media_sequence = media_sequence
        self.discontinuity_sequence = discontinuity_sequence
        self.segments: deque[S] = deque()

    def __len__(self) -> int:
        return len(self.segments)

    def duration(self) -> float:
        return sum(s.duration for s in self.segments)

    def append(self, segment: S, target_duration: int) -> list[tuple[S, float]]:
        """Add a segment and slide; the segments removed, each with the seconds it stays
        downloadable from now (W5, G2)."""
        self.segments.append(segment)
        removed = []
        floor = MIN_LISTED_TDS * target_duration
        ceiling = MAX_LISTED_FACTOR * self.min_segments
        while len(self.segments) > self.min_segments:
            head = self.segments[0]
            served = self.duration()  # the playlist as it was just before this removal
            if served - head.duration < floor and len(self.segments) <= ceiling:
                break
            self.segments.popleft()
            self.media_sequence += 1
            if head.discontinuity:
                self.discontinuity_sequence += 1
            removed.append((head, head.duration + max(served, floor)))
        return removed


class Windowed(Generic[S]):
    """A playlist owner's view of its window: the listed segments and sequence numbers."""

    window: SlidingWindow[S]

    @property
    def segments(self) -> list[S]:
        return list(self.window.segments)

    @property
    def media_sequence(self) -> int:
        return self.window.media_sequence

    @property
    def discontinuity_sequence(self) -> int:
        return self.window.discontinuity_sequence

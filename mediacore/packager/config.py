"""Packaging settings, named once; the app's configuration uses these as its [hls] and
[llhls] sections. The stores and the origin receive the values they need as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HlsConfig:
    segment_duration: float = 2.0
    """Target seconds per segment; a segment closes at the first keyframe after this."""
    window_segments: int = 8
    """Segments listed in the live playlist; never fewer than 6 (Apple A8.11) nor 3 x TD (W4)."""
    end_grace: float = 10.0
    """Seconds a stream waits for its publisher to return before EXT-X-ENDLIST is written."""
    ended_retention: float = 60.0
    """Seconds an ended stream's playlist stays served (W8) before the stream is forgotten."""
    queue_frames: int = 2048
    """Frames the packager may fall behind ingest before it drops (to the next keyframe)."""
    max_timestamp_jump: float = 10.0
    """Seconds (or 3 x TARGETDURATION if longer) a track's timestamps may jump, either way, and
    stay one timeline; a longer jump starts a new one (EXT-X-DISCONTINUITY) instead of a hole
    spanned with GAP parts or one huge segment."""
    max_segment_bytes: int = 64 * 1024 * 1024
    """Bytes an open segment or LL-HLS parent may hold before it is cut without a keyframe
    (frozen timestamps never reach the duration bound)."""
    max_packager_restarts: int = 3
    """Times a stream's HLS or LL-HLS packager that raised is restarted within
    `packager_restart_window` (each restart continues the playlist after an
    EXT-X-DISCONTINUITY); one more error marks the stream failed: its playlists end and its
    publisher is disconnected. A bug that one stream's media triggers over and over must not
    spin, nor leave the stream frozen while the API says live."""
    packager_restart_window: float = 60.0
    """Seconds over which packager restarts are counted against `max_packager_restarts`."""


@dataclass(slots=True)
class LlHlsConfig:
    part_duration: float = 0.2
    """Nominal seconds per part. PART-TARGET is declared 10 % above it, so timestamp jitter
    never makes a part longer than PART-TARGET (L5) while full parts stay above 85 % of it."""
    window_segments: int = 20
    """Segments listed; longer than the 6 x TD skip boundary so delta updates save bytes."""
    blocking_timeout_factor: float = 3.0
    """A blocked playlist or part request fails with 503 after this many target durations (B8)."""


PACKAGER_QUEUE_BYTES = 256 * 1024 * 1024
"""Bytes a packager's hub queue may hold: the frame count (queue_frames) is the working
bound; this only stops a stream of absurdly large frames from taking the machine's memory."""

FRAME_OVERHEAD_BYTES = 256
"""What a frame held in an open segment or part costs beyond its payload (the frame object,
its timestamps, its list slot), counted toward max_segment_bytes: a flood of tiny frames must
reach that bound too."""

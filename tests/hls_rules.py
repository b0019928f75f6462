"""Checks of live playlists against HLS-RULES.md, shared by the end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from mediacore.model.timebase import round_half_up
from mediacore.playlist.media import MediaPlaylist


@dataclass
class PlaylistHistory:
    """Accumulates reloads of one live playlist and checks the rules that span reloads."""

    target_duration: int | None = None
    uri_by_msn: dict[int, str] = field(default_factory=dict)
    pdt_by_msn: dict[int, float] = field(default_factory=dict)
    last_media_sequence: int = -1
    last_first_uri: str | None = None
    reloads: int = 0
    max_segments: int = 0

    def add(self, text: str) -> MediaPlaylist:
        lines = text.splitlines()
        assert lines[0] == "#EXTM3U", "P4: #EXTM3U first"
        assert "#EXT-X-PLAYLIST-TYPE" not in text, "P7: no PLAYLIST-TYPE in a live playlist"
        assert text.count("#EXT-X-VERSION") == 1, "P5: one EXT-X-VERSION"
        pl = MediaPlaylist.parse(text)  # raises on repeated once-only tags (P6)
        assert pl.target_duration >= 1, "T1"
        if self.target_duration is None:
            self.target_duration = pl.target_duration
        assert pl.target_duration == self.target_duration, "T3: TARGETDURATION changed"
        listed = pl.complete_segments  # an LL-HLS parent in progress has parts, no URI yet
        for seg in listed:
            assert round_half_up(seg.duration) <= pl.target_duration, f"T2: EXTINF {seg.duration} > TD"
        if self.last_media_sequence >= 0:
            assert pl.media_sequence >= self.last_media_sequence, "M2: MEDIA-SEQUENCE decreased"
        for seg in listed:
            msn = seg.msn
            assert self.uri_by_msn.setdefault(msn, seg.uri) == seg.uri, f"M4: URI of MSN {msn} changed"
            if seg.program_date_time is not None:
                prev = self.pdt_by_msn.setdefault(msn, seg.program_date_time)
                assert abs(prev - seg.program_date_time) < 0.002, f"PDT of MSN {msn} changed"
        # M2: the head moved by exactly the number of segments removed.
        if self.last_media_sequence >= 0 and listed:
            assert self.uri_by_msn[pl.media_sequence] == listed[0].uri
        if pl.media_sequence > 0:
            assert len(listed) >= 6, "W7: fewer than 6 segments after sliding"
            assert sum(s.duration for s in listed) >= 3 * pl.target_duration, "W4: under 3 x TD"
        # D4: PDT continues from the previous segment's PDT + EXTINF, absent a discontinuity.
        for a, b in zip(listed, listed[1:]):
            if a.program_date_time is not None and b.program_date_time is not None and not b.discontinuity:
                assert abs(a.program_date_time + a.duration - b.program_date_time) < 0.04, "D4"
        self.last_media_sequence = pl.media_sequence
        self.reloads += 1
        self.max_segments = max(self.max_segments, len(listed))
        return pl

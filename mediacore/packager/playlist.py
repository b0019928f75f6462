"""HLS media playlists as data: render() for the origin, parse() for clients and tests.

Rules this module follows (see HLS-RULES.md): #EXTM3U first (P4); one EXT-X-VERSION at the
lowest value the tags need (P5: 3 for decimal EXTINF); each playlist tag once (P6); no
PLAYLIST-TYPE on a live playlist (P7); TARGETDURATION an integer >= every EXTINF rounded half
up (T1, T2); MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE before the first segment (M1, M5);
PROGRAM-DATE-TIME on every segment, ISO-8601 with milliseconds and zone (D1-D3);
INDEPENDENT-SEGMENTS because every segment starts with an IDR (I1, I2).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    uri: str
    duration: float
    program_date_time: float | None = None  # seconds since the epoch
    discontinuity: bool = False


@dataclass(slots=True)
class MediaPlaylist:
    target_duration: int
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    segments: list[SegmentEntry] = field(default_factory=list)
    ended: bool = False
    independent_segments: bool = True
    version: int = 3

    def render(self) -> str:
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{self.version}",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
        ]
        if self.independent_segments:
            lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        for seg in self.segments:
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.program_date_time is not None:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_date_time(seg.program_date_time)}")
            lines.append(f"#EXTINF:{seg.duration:.5f},")
            lines.append(seg.uri)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> "MediaPlaylist":
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines or lines[0] != "#EXTM3U":
            raise ValueError("playlist does not start with #EXTM3U")
        pl = cls(target_duration=0)
        pending: dict[str, object] = {}
        seen_tags: set[str] = set()
        for line in lines[1:]:
            if line.startswith("#"):
                tag, _, value = line.partition(":")
                if tag in ONCE_TAGS:
                    if tag in seen_tags:
                        raise ValueError(f"{tag} appears more than once")
                    seen_tags.add(tag)
                if tag == "#EXT-X-VERSION":
                    pl.version = int(value)
                elif tag == "#EXT-X-TARGETDURATION":
                    pl.target_duration = int(value)
                elif tag == "#EXT-X-MEDIA-SEQUENCE":
                    pl.media_sequence = int(value)
                elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
                    pl.discontinuity_sequence = int(value)
                elif tag == "#EXT-X-INDEPENDENT-SEGMENTS":
                    pl.independent_segments = True
                elif tag == "#EXT-X-ENDLIST":
                    pl.ended = True
                elif tag == "#EXT-X-DISCONTINUITY":
                    pending["discontinuity"] = True
                elif tag == "#EXT-X-PROGRAM-DATE-TIME":
                    pending["pdt"] = parse_date_time(value)
                elif tag == "#EXTINF":
                    pending["duration"] = float(value.split(",")[0])
                continue
            if "duration" not in pending:
                raise ValueError(f"segment {line} has no EXTINF")
            pl.segments.append(
                SegmentEntry(
                    line,
                    float(pending["duration"]),  # type: ignore[arg-type]
                    pending.get("pdt"),  # type: ignore[arg-type]
                    bool(pending.get("discontinuity", False)),
                )
            )
            pending = {}
        return pl


ONCE_TAGS = {
    "#EXT-X-VERSION",
    "#EXT-X-TARGETDURATION",
    "#EXT-X-MEDIA-SEQUENCE",
    "#EXT-X-DISCONTINUITY-SEQUENCE",
    "#EXT-X-ENDLIST",
    "#EXT-X-PLAYLIST-TYPE",
    "#EXT-X-INDEPENDENT-SEGMENTS",
    "#EXT-X-START",
    "#EXT-X-PART-INF",
    "#EXT-X-SERVER-CONTROL",
}


def format_date_time(epoch_seconds: float) -> str:
    t = dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_date_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

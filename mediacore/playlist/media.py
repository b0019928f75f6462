"""Media playlists (HLS and Low-Latency HLS) as data: one render() and one parse().

The stores build a MediaPlaylist and render it; the player client, the edge and the tests
parse what the origin serves with the same parse(), so what is written and what is read
cannot disagree. A plain HLS playlist is the LL-HLS one without parts, server control,
skips, hints and reports.

Rules kept here (docs/hls-rules.md): #EXTM3U first (P4); one EXT-X-VERSION, set by the
store at the lowest value its tags need (P5); each playlist tag once, checked on parse (P6);
no PLAYLIST-TYPE on a live playlist (P7); MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE before
the first segment (M1, M5); PROGRAM-DATE-TIME as ISO-8601 with milliseconds (D1-D3); a
parent's DISCONTINUITY, MAP and PROGRAM-DATE-TIME before its first part (L6, checked on
parse); one PRELOAD-HINT at the end, never with ENDLIST (H2-H4); rendition reports last (R1).

EXT-X-DATERANGE tags (mediacore/playlist/daterange.py) are listed where they were added: a
segment's date ranges pinned to its part N (N > 0) come just before that EXT-X-PART line,
the others (and all of them once the segment's parts are no longer listed) before the
segment's DISCONTINUITY, MAP and PROGRAM-DATE-TIME, so a new one is always appended (W3).
A delta update keeps the date ranges of the segments it skips right after EXT-X-SKIP (K4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediacore.playlist.daterange import TAG as DATERANGE_TAG
from mediacore.playlist.daterange import DateRange
from mediacore.playlist.tags import format_date_time, parse_attributes, parse_date_time

ONCE_TAGS = frozenset(
    {
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
        "#EXT-X-SKIP",
    }
)
"""Tags that may appear at most once in a media playlist (P6)."""


@dataclass(frozen=True, slots=True)
class Part:
    """An LL-HLS partial segment; a GAP part holds a hole in the media and is never served."""

    uri: str
    duration: float
    independent: bool = False
    gap: bool = False


@dataclass(slots=True)
class Segment:
    """A segment (or LL-HLS parent). `uri` is None for the parent still in progress, which
    the playlist lists by its parts only."""

    msn: int
    uri: str | None
    duration: float = 0.0
    program_date_time: float | None = None  # seconds since the epoch
    discontinuity: bool = False
    gap: bool = False  # EXT-X-GAP: no media behind the URI
    map_uri: str | None = None  # the EXT-X-MAP in force
    parts: list[Part] = field(default_factory=list)
    dateranges: list[tuple[int, DateRange]] = field(default_factory=list)
    """(part index, date range): listed before that part (index 0: before the segment's tags)."""

    @property
    def complete(self) -> bool:
        return self.uri is not None


@dataclass(frozen=True, slots=True)
class ServerControl:
    can_block_reload: bool = False
    can_skip_until: float | None = None
    can_skip_dateranges: bool = False
    part_hold_back: float | None = None


@dataclass(frozen=True, slots=True)
class RenditionReport:
    uri: str
    last_msn: int
    last_part: int


@dataclass(slots=True)
class MediaPlaylist:
    target_duration: int
    version: int = 3
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    independent_segments: bool = False
    segments: list[Segment] = field(default_factory=list)
    ended: bool = False
    # Low-Latency HLS
    server_control: ServerControl | None = None
    part_target: float | None = None
    skipped_segments: int = 0  # EXT-X-SKIP: head segments left out of a delta update
    recently_removed_dateranges: str | None = None  # set on a v2 skip: IDs, tab-separated
    skipped_dateranges: list[DateRange] = field(default_factory=list)  # of skipped segments, after SKIP
    preload_hint: str | None = None  # URI of the next part (TYPE=PART)
    rendition_reports: list[RenditionReport] = field(default_factory=list)

    @property
    def complete_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.uri is not None]

    def render(self) -> str:
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{self.version}",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
        ]
        if self.server_control is not None:
            lines.append("#EXT-X-SERVER-CONTROL:" + _render_server_control(self.server_control))
        if self.part_target is not None:
            lines.append(f"#EXT-X-PART-INF:PART-TARGET={self.part_target:.3f}")
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}")
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        if self.independent_segments:
            lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        if self.skipped_segments:
            removed = self.recently_removed_dateranges
            extra = f',RECENTLY-REMOVED-DATERANGES="{removed}"' if removed is not None else ""
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={self.skipped_segments}{extra}")
        lines.extend(dr.render() for dr in self.skipped_dateranges)
        map_uri: str | None = None
        for seg in self.segments:
            inline = {index for index, _ in seg.dateranges if 0 < index < len(seg.parts)}
            lines.extend(dr.render() for index, dr in seg.dateranges if index not in inline)
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.map_uri is not None and seg.map_uri != map_uri:
                lines.append(f'#EXT-X-MAP:URI="{seg.map_uri}"')
                map_uri = seg.map_uri
            if seg.program_date_time is not None:
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_date_time(seg.program_date_time)}")
            for i, part in enumerate(seg.parts):
                if i in inline:
                    lines.extend(dr.render() for index, dr in seg.dateranges if index == i)
                flag = ",INDEPENDENT=YES" if part.independent else ",GAP=YES" if part.gap else ""
                lines.append(f'#EXT-X-PART:DURATION={part.duration:.5f},URI="{part.uri}"{flag}')
            if seg.uri is not None:
                if seg.gap:
                    lines.append("#EXT-X-GAP")
                lines.append(f"#EXTINF:{seg.duration:.5f},")
                lines.append(seg.uri)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        elif self.preload_hint is not None:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{self.preload_hint}"')
        for report in self.rendition_reports:
            lines.append(
                f'#EXT-X-RENDITION-REPORT:URI="{report.uri}",LAST-MSN={report.last_msn},LAST-PART={report.last_part}'
            )
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> MediaPlaylist:
        """Read a media playlist; ValueError on a broken one (no #EXTM3U, a repeated tag,
        a URI without EXTINF, a parent's header tags after its parts)."""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines or lines[0] != "#EXTM3U":
            raise ValueError("playlist does not start with #EXTM3U")
        pl = cls(target_duration=0)
        seen: set[str] = set()
        current: Segment | None = None
        map_uri: str | None = None
        extinf: float | None = None

        def segment() -> Segment:
            nonlocal current
            if current is None:
                current = Segment(pl.media_sequence + pl.skipped_segments + len(pl.segments), None, map_uri=map_uri)
                pl.segments.append(current)
            return current

        def header(tag: str) -> Segment:
            seg = segment()
            if seg.parts:
                raise ValueError(f"{tag} after the parts of segment {seg.msn} (L6)")
            return seg

        for line in lines[1:]:
            if not line.startswith("#"):
                if extinf is None:
                    raise ValueError(f"segment {line} has no EXTINF")
                seg = segment()
                seg.uri, seg.duration = line, extinf
                current, extinf = None, None
                continue
            tag, _, value = line.partition(":")
            if tag in ONCE_TAGS:
                if tag in seen:
                    raise ValueError(f"{tag} appears more than once")
                seen.add(tag)
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
            elif tag == "#EXT-X-SERVER-CONTROL":
                pl.server_control = _parse_server_control(parse_attributes(value))
            elif tag == "#EXT-X-PART-INF":
                pl.part_target = float(parse_attributes(value)["PART-TARGET"])
            elif tag == "#EXT-X-SKIP":
                attrs = parse_attributes(value)
                pl.skipped_segments = int(attrs["SKIPPED-SEGMENTS"])
                pl.recently_removed_dateranges = attrs.get("RECENTLY-REMOVED-DATERANGES")
            elif tag == "#EXT-X-DISCONTINUITY":
                header(tag).discontinuity = True
            elif tag == "#EXT-X-MAP":
                map_uri = parse_attributes(value)["URI"]
                if current is not None:
                    header(tag).map_uri = map_uri
            elif tag == "#EXT-X-PROGRAM-DATE-TIME":
                header(tag).program_date_time = parse_date_time(value)
            elif tag == "#EXT-X-PART":
                attrs = parse_attributes(value)
                segment().parts.append(
                    Part(
                        attrs["URI"],
                        float(attrs["DURATION"]),
                        attrs.get("INDEPENDENT") == "YES",
                        attrs.get("GAP") == "YES",
                    )
                )
            elif tag == "#EXT-X-GAP":
                segment().gap = True
            elif tag == DATERANGE_TAG:
                if current is None and pl.skipped_segments and not pl.segments:
                    pl.skipped_dateranges.append(DateRange.parse(line))
                else:
                    seg = segment()
                    seg.dateranges.append((len(seg.parts), DateRange.parse(line)))
            elif tag == "#EXTINF":
                extinf = float(value.split(",")[0])
            elif tag == "#EXT-X-PRELOAD-HINT":
                attrs = parse_attributes(value)
                if attrs.get("TYPE") == "PART":
                    pl.preload_hint = attrs["URI"]
            elif tag == "#EXT-X-RENDITION-REPORT":
                attrs = parse_attributes(value)
                pl.rendition_reports.append(
                    RenditionReport(attrs["URI"], int(attrs.get("LAST-MSN", "-1")), int(attrs.get("LAST-PART", "-1")))
                )
        return pl


def _render_server_control(control: ServerControl) -> str:
    attrs = []
    if control.can_block_reload:
        attrs.append("CAN-BLOCK-RELOAD=YES")
    if control.can_skip_until is not None:
        attrs.append(f"CAN-SKIP-UNTIL={control.can_skip_until:.1f}")
    if control.can_skip_dateranges:
        attrs.append("CAN-SKIP-DATERANGES=YES")
    if control.part_hold_back is not None:
        attrs.append(f"PART-HOLD-BACK={control.part_hold_back:.3f}")
    return ",".join(attrs)


def _parse_server_control(attrs: dict[str, str]) -> ServerControl:
    skip = attrs.get("CAN-SKIP-UNTIL")
    hold = attrs.get("PART-HOLD-BACK")
    return ServerControl(
        attrs.get("CAN-BLOCK-RELOAD") == "YES",
        float(skip) if skip is not None else None,
        attrs.get("CAN-SKIP-DATERANGES") == "YES",
        float(hold) if hold is not None else None,
    )

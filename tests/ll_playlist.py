"""A parser for LL-HLS media playlists, for the rule tests (parts, hints, reports, skips)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mediacore.packager.playlist import parse_date_time

ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in ATTRIBUTE.findall(text)}


@dataclass
class Part:
    uri: str
    duration: float
    independent: bool
    gap: bool = False


@dataclass
class Segment:
    msn: int
    uri: str | None = None
    duration: float = 0.0
    parts: list[Part] = field(default_factory=list)
    pdt: float | None = None
    discontinuity: bool = False
    gap: bool = False  # EXT-X-GAP
    map_uri: str | None = None
    tag_order: list[str] = field(default_factory=list)


@dataclass
class LlPlaylist:
    version: int = 0
    target_duration: int = 0
    server_control: dict[str, str] = field(default_factory=dict)
    part_target: float = 0.0
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    skipped: int = 0
    skip_attrs: dict[str, str] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)  # the last may be in progress (uri None)
    hint: dict[str, str] | None = None
    reports: list[dict[str, str]] = field(default_factory=list)
    ended: bool = False
    lines: list[str] = field(default_factory=list)

    @property
    def complete(self) -> list[Segment]:
        return [s for s in self.segments if s.uri is not None]


def parse_ll(text: str) -> LlPlaylist:
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    pl = LlPlaylist(lines=lines)
    current: Segment | None = None
    map_uri = None

    def segment() -> Segment:
        nonlocal current
        if current is None:
            current = Segment(pl.media_sequence + pl.skipped + len(pl.segments), map_uri=map_uri)
            pl.segments.append(current)
        return current

    for line in lines[1:]:
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-VERSION":
            pl.version = int(value)
        elif tag == "#EXT-X-TARGETDURATION":
            pl.target_duration = int(value)
        elif tag == "#EXT-X-SERVER-CONTROL":
            pl.server_control = attributes(value)
        elif tag == "#EXT-X-PART-INF":
            pl.part_target = float(attributes(value)["PART-TARGET"])
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            pl.media_sequence = int(value)
        elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
            pl.discontinuity_sequence = int(value)
        elif tag == "#EXT-X-SKIP":
            pl.skip_attrs = attributes(value)
            pl.skipped = int(pl.skip_attrs["SKIPPED-SEGMENTS"])
        elif tag == "#EXT-X-MAP":
            map_uri = attributes(value)["URI"]
            if current is not None:
                current.map_uri = map_uri
        elif tag == "#EXT-X-DISCONTINUITY":
            segment().discontinuity = True
            segment().tag_order.append("DISCONTINUITY")
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            segment().pdt = parse_date_time(value)
            segment().tag_order.append("PDT")
        elif tag == "#EXT-X-PART":
            a = attributes(value)
            segment().parts.append(Part(a["URI"], float(a["DURATION"]), a.get("INDEPENDENT") == "YES", a.get("GAP") == "YES"))
            segment().tag_order.append("PART")
        elif tag == "#EXT-X-GAP":
            segment().gap = True
        elif tag == "#EXTINF":
            segment().duration = float(value.split(",")[0])
        elif tag == "#EXT-X-PRELOAD-HINT":
            pl.hint = attributes(value)
        elif tag == "#EXT-X-RENDITION-REPORT":
            pl.reports.append(attributes(value))
        elif tag == "#EXT-X-ENDLIST":
            pl.ended = True
        elif line and not line.startswith("#"):
            segment().uri = line
            current = None
    return pl

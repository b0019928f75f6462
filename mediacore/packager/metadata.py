"""Timed metadata in the packagers: which segment or part an item starts in, its
EXT-X-DATERANGE, and its in-band ID3 tag.

An item (mediacore/model/metadata.py) waits in a `PendingMetadata` until the packager emits
the first segment or part whose media presents at or past the item's PTS; it is listed
before that segment or part in every playlist, and its ID3 tag goes into that TS segment
(a PES on the timed-metadata stream, mediacore/packager/ts.py) and into that fMP4 part (an
emsg box, mediacore/packager/fmp4.py), at the item's PTS. An item whose PTS lies in media
already emitted (a start in the past) joins the next one. One that a timeline change left
more than MAX_START_OFFSET ahead of the media joins the next one too: it must not wait for
media that will never come.

ID3 (id3.org ID3v2.4, as Apple's "Timed Metadata for HTTP Live Streaming" carries it): one
TXXX frame (UTF-8) per field: ID, CLASS, START-DATE, DURATION, then each `X-` attribute by
its name. hls.js hands these frames to the page (FRAG_PARSING_METADATA) as TXXX key/values.
"""

from __future__ import annotations

import struct

from mediacore.model.metadata import MAX_START_OFFSET, TimedMetadata
from mediacore.playlist.daterange import DateRange
from mediacore.playlist.tags import format_date_time

STRANDED_90K = round(MAX_START_OFFSET * 90000)
"""An item this far ahead of the media being emitted was stranded by a timeline change."""


def daterange_of(item: TimedMetadata) -> DateRange:
    return DateRange(item.id, item.date, item.cls, item.duration, item.attributes)


def _syncsafe(n: int) -> bytes:
    if n >= 1 << 28:
        raise ValueError("ID3 size beyond 256 MiB")
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _txxx(description: str, value: str) -> bytes:
    body = b"\x03" + description.encode() + b"\x00" + value.encode()
    return b"TXXX" + _syncsafe(len(body)) + b"\x00\x00" + body


def id3_tag(item: TimedMetadata) -> bytes:
    """The item as an ID3v2.4 tag of TXXX frames."""
    fields = [("ID", item.id), ("CLASS", item.cls), ("START-DATE", format_date_time(item.date))]
    if item.duration is not None:
        fields.append(("DURATION", f"{item.duration:.3f}"))
    fields += [(name, str(value)) for name, value in item.attributes]
    frames = b"".join(_txxx(k, v) for k, v in fields)
    return b"ID3" + struct.pack(">BBB", 4, 0, 0) + _syncsafe(len(frames)) + frames


class PendingMetadata:
    """Items not yet placed, in arrival order."""

    def __init__(self) -> None:
        self.items: list[TimedMetadata] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: TimedMetadata) -> None:
        self.items.append(item)

    def due(self, end_90k: int) -> list[TimedMetadata]:
        """The items that start before `end_90k` (the end of the media about to be emitted,
        90 kHz presentation time), or are stranded far ahead of it; they leave the queue."""
        if not self.items:
            return []
        due = [i for i in self.items if i.pts_90k < end_90k or i.pts_90k - end_90k > STRANDED_90K]
        if due:
            self.items = [i for i in self.items if not (i.pts_90k < end_90k or i.pts_90k - end_90k > STRANDED_90K)]
        return due

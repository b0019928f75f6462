"""Which media names are still in the future, as far as the playlists this edge fetched say.

A 404 for a segment or part that is not published yet is true only until it is published: the
part after the preload hint exists one part later. Such a 404 must not be stored, or every
viewer of the edge is told the part is missing when it arrives. A 404 for a name the playlists
have already gone past (a GAP part, an index past a parent's last part, a segment out of the
window) stays true, so it may be stored.

The frontier of a rendition (its directory, media prefix and session) is the first name not
known to exist yet: the `EXT-X-PRELOAD-HINT` part of an LL-HLS playlist, or the segment after
the last one listed. A name at or past the frontier, or of a rendition whose playlist this edge
has not seen, is in the future. Frontiers only move forward; they are learnt from upstream
playlists only, never from what a client asks for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

import lru

from mediacore.playlist.tags import parse_attributes
from mediacore.playlist.uris import HLS_SEGMENT_SUFFIX, parse_ll_media

MAX_RENDITIONS = 4096
"""Renditions whose frontier is remembered (least recently learnt forgotten first). A stream has
three (HLS, LL-HLS video and audio) per session, so this covers a thousand live streams."""
LL_MEDIA_SUFFIX = ".m4s"
PRELOAD_HINT = re.compile(r"^#EXT-X-PRELOAD-HINT:(.*)$", re.MULTILINE)

Rendition = tuple[str, str, str]
"""(directory, media prefix, session): one rendition of one publishing session."""
Position = tuple[int, int]
"""(media sequence number, part index) within a rendition."""


@dataclass(frozen=True, slots=True)
class MediaName:
    rendition: Rendition
    msn: int
    part: int | None  # None for a whole segment (HLS .ts or an LL-HLS parent)

    def at_or_past(self, frontier: Position) -> bool:
        """A part exists once the frontier has moved past it; a whole segment once the
        frontier has left its media sequence number (the hinted part's parent is still open)."""
        if self.part is None:
            return self.msn >= frontier[0]
        return (self.msn, self.part) >= frontier


def media_name(path: str) -> MediaName | None:
    """The rendition and position of an HLS segment or LL-HLS part / parent path; None for
    anything else (init segments, playlists, pages)."""
    directory, _, file = path.rpartition("/")
    if file.endswith(LL_MEDIA_SUFFIX):
        parsed = parse_ll_media(file[: -len(LL_MEDIA_SUFFIX)])
        if parsed is None or parsed.msn < 0 or (parsed.part is not None and parsed.part < 0):
            return None
        return MediaName((directory, parsed.prefix, parsed.session), parsed.msn, parsed.part)
    if file.endswith(HLS_SEGMENT_SUFFIX):
        session, _, msn = file[: -len(HLS_SEGMENT_SUFFIX)].rpartition("-")
        if not session or not msn.isascii() or not msn.isdigit():
            return None
        return MediaName((directory, "", session), int(msn), None)
    return None


def _last_uri(text: str) -> str | None:
    """The last URI line of a playlist (lines not starting with '#'), read from the end."""
    end = len(text)
    while end > 0:
        start = text.rfind("\n", 0, end - 1) + 1
        line = text[start:end].strip()
        if line and not line.startswith("#"):
            return line
        end = start - 1 if start > 0 else 0
    return None


def playlist_frontier(playlist_path: str, text: str) -> tuple[Rendition, Position] | None:
    """The frontier a media playlist shows: its preload-hint part, else the segment after its
    last one. None for a playlist without media names (a multivariant playlist)."""
    for match in PRELOAD_HINT.finditer(text):
        attrs = parse_attributes(match.group(1).strip())
        if attrs.get("TYPE") == "PART" and "URI" in attrs:
            hinted = media_name(urljoin(playlist_path, attrs["URI"]))
            if hinted is not None and hinted.part is not None:
                return hinted.rendition, (hinted.msn, hinted.part)
    uri = _last_uri(text)
    last = media_name(urljoin(playlist_path, uri)) if uri else None
    if last is None:
        return None
    if last.part is None:
        return last.rendition, (last.msn + 1, 0)
    return last.rendition, (last.msn, last.part + 1)


class Frontiers:
    """The frontier of every rendition whose playlist came through this edge (bounded)."""

    def __init__(self, max_renditions: int = MAX_RENDITIONS) -> None:
        self._frontiers: lru.LRU = lru.LRU(max_renditions)

    def __len__(self) -> int:
        return len(self._frontiers)

    def learn(self, playlist_path: str, text: str) -> None:
        found = playlist_frontier(playlist_path, text)
        if found is None:
            return
        rendition, position = found
        known = self._frontiers.get(rendition)
        if known is None or position > known:  # an older playlist never moves it back
            self._frontiers[rendition] = position

    def frontier(self, rendition: Rendition) -> Position | None:
        return self._frontiers.get(rendition)

    def in_future(self, path: str) -> bool:
        """Whether a 404 for `path` may stop being true: a segment or part at or past its
        rendition's frontier, or of a rendition this edge knows nothing about."""
        name = media_name(path)
        if name is None:
            return False
        frontier = self._frontiers.get(name.rendition)
        return frontier is None or name.at_or_past(frontier)

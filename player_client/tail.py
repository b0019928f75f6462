"""The parts at the end of an LL-HLS media playlist newer than a given one, read from the end.

Why: a viewer following the live edge reloads the playlist once per part and needs only the
part or two the reload added. Parsing the whole playlist (`MediaPlaylist.parse`) each time
costs a line-by-line pass over every segment and part of the window; this reads back from the
end to the PROGRAM-DATE-TIME of the parent holding the newest part the viewer has, and places
only the parts after it. The full parser is still what a viewer joins with
(`player_client.player.parse_media_playlist`).

Part keys come from the part URIs (`mediacore.playlist.uris.parse_ll_media`, `v-SESSION-MSN.PART`):
walking back from the end, the media sequence numbers of the listed segments are not known.
"""

from __future__ import annotations

from mediacore.playlist.tags import parse_attributes, parse_date_time
from mediacore.playlist.uris import parse_ll_media
from player_client.player import Media

PDT_TAG = "#EXT-X-PROGRAM-DATE-TIME:"
PART_TAG = "#EXT-X-PART:"
LL_MEDIA_SUFFIX = ".m4s"


def part_key(uri: str) -> tuple[int, int] | None:
    """(msn, part index) of a part URI; None for anything else."""
    name = uri.rsplit("/", 1)[-1]
    parsed = parse_ll_media(name.removesuffix(LL_MEDIA_SUFFIX))
    if parsed is None or parsed.part is None:
        return None
    return parsed.msn, parsed.part


def _parts_from(text: str, at: int) -> list[Media]:
    """The parts listed after offset `at` (a PROGRAM-DATE-TIME line), placed on the PDT timeline:
    each PDT restarts the clock, each part advances it by its duration."""
    parts: list[Media] = []
    clock = 0.0
    for line in text[at:].splitlines():
        if line.startswith(PDT_TAG):
            clock = parse_date_time(line[len(PDT_TAG) :].strip())
        elif line.startswith(PART_TAG):
            attrs = parse_attributes(line[len(PART_TAG) :])
            key = part_key(attrs.get("URI", ""))
            if key is None:
                raise ValueError(f"part URI {attrs.get('URI')!r} names no part")
            duration = float(attrs["DURATION"])
            parts.append(
                Media(key, attrs["URI"], clock, duration, attrs.get("INDEPENDENT") == "YES", attrs.get("GAP") == "YES")
            )
            clock += duration
    return parts


def parts_after(text: str, last: tuple[int, int]) -> list[Media]:
    """The parts of a media playlist after `last` (msn, part index), oldest first: all of the
    listed ones if `last` is older than the window. ValueError for a part URI that names no part;
    [] for a playlist without PROGRAM-DATE-TIME (its parts cannot be placed)."""
    end = len(text)
    parts: list[Media] = []
    while end > 0:
        at = text.rfind(PDT_TAG, 0, end)
        if at < 0:
            break
        parts = _parts_from(text, at)
        if parts and parts[0].key <= last:
            break
        end = at
    return [p for p in parts if p.key > last]

"""Every media URI the origin writes into a playlist, formatted and parsed here only.

URIs carry a per-session id so that no cache confuses a restarted stream's segment 0 with an
older one (M4), and they never change once listed.
- HLS segment: `SESSION-MSN.ts`
- LL-HLS init segment: `P-init-SESSION-N.mp4`; parent: `P-SESSION-MSN.m4s`;
  part: `P-SESSION-MSN.PART.m4s`, with P the rendition prefix (`v` video, `a` audio).
The origin's routes are built from the patterns below, so a URI the store writes is always
one the origin can route.
"""

from __future__ import annotations

from dataclasses import dataclass

STREAM_ROOT = "/live/{stream}/"
"""Where a stream's playlists and media live in the URL space (the contract's /live/STREAM/)."""
HLS_PLAYLIST = "index.m3u8"
LL_MULTIVARIANT = "ll.m3u8"
LL_DIR = "ll/"
"""LL-HLS rendition playlists and media sit below the multivariant playlist, in ll/."""
WATCH_PAGE = "/watch/{stream}"
THUMBNAIL = "thumbnail.jpg"
"""A stream's picture from its latest keyframe, below STREAM_ROOT (the directory, moderators)."""

HLS_SEGMENT_SUFFIX = ".ts"
HLS_SEGMENT_ROUTE = "{segment:[0-9a-f]+-[0-9]+}" + HLS_SEGMENT_SUFFIX
"""aiohttp route pattern of an HLS segment (match_info['segment'] is the name without the
suffix; hls_segment_from_route() turns it back into the URI)."""
LL_MEDIA_ROUTE = r"{name:[av]-[0-9a-z.\-]+}.{ext:mp4|m4s}"
"""aiohttp route pattern of an LL-HLS init segment, parent or part."""

LL_RENDITIONS = {"video": "v", "audio": "a"}
"""LL-HLS rendition playlist name -> the prefix of its media URIs."""


def hls_segment_uri(session: str, msn: int) -> str:
    return f"{session}-{msn}{HLS_SEGMENT_SUFFIX}"


def hls_segment_from_route(name: str) -> str:
    return name + HLS_SEGMENT_SUFFIX


def ll_init_uri(prefix: str, session: str, number: int) -> str:
    return f"{prefix}-init-{session}-{number}.mp4"


def ll_parent_uri(prefix: str, session: str, msn: int) -> str:
    return f"{prefix}-{session}-{msn}.m4s"


def ll_part_uri(prefix: str, session: str, msn: int, index: int) -> str:
    return f"{prefix}-{session}-{msn}.{index}.m4s"


def ll_rendition_uri(rendition: str) -> str:
    """A rendition playlist's URI relative to its sibling renditions (rendition reports)."""
    return f"{rendition}.m3u8"


def ll_playlist_uri(rendition: str) -> str:
    """A rendition playlist's URI relative to the multivariant playlist."""
    return LL_DIR + ll_rendition_uri(rendition)


def playback_urls(base: str, stream: str) -> dict[str, str]:
    """The URLs a viewer of `stream` opens, below the origin's `base` URL."""
    root = base + STREAM_ROOT.format(stream=stream)
    return {
        "hls": root + HLS_PLAYLIST,
        "ll_hls": root + LL_MULTIVARIANT,
        "watch": base + WATCH_PAGE.format(stream=stream),
        "thumbnail": root + THUMBNAIL,
    }


@dataclass(frozen=True, slots=True)
class LlMediaName:
    prefix: str
    session: str
    msn: int
    part: int | None  # None for a whole parent


def parse_ll_media(name: str) -> LlMediaName | None:
    """'v-SESSION-MSN.PART' or 'v-SESSION-MSN' (without the extension) -> its fields;
    None for anything else (an init segment's name included)."""
    try:
        prefix, session, rest = name.split("-", 2)
        msn_text, _, part_text = rest.partition(".")
        return LlMediaName(prefix, session, int(msn_text), int(part_text) if part_text else None)
    except ValueError:
        return None


def ll_prefix(name: str) -> str:
    """The rendition prefix of any LL-HLS media name (init segments included)."""
    return name.split("-", 1)[0]

"""Golden playlists: what the stores render for a fixed history, byte for byte, and every
golden file read back by the one parser and rendered again unchanged.

MEDIACORE_WRITE_GOLDEN=1 rewrites the files (review the diff before committing it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediacore.playlist.daterange import DateRange
from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.multivariant import AudioRendition, MultivariantPlaylist, Variant
from mediacore.store.hls import HlsStore
from mediacore.store.ll import LlRendition

GOLDEN = Path(__file__).parent / "data" / "golden"
SESSION = "5e55101d"
EPOCH = 1_764_460_800.0  # 2025-11-30T00:00:00Z


def hls_store() -> HlsStore:
    store = HlsStore(window_segments=6, segment_duration=2.0)
    store.session_id = SESSION
    for i in range(9):
        duration = 2.0 if i != 4 else 1.96667
        store.add_segment(duration, b"ts", EPOCH + 2 * i, discontinuity=(i == 6), now=float(2 * i))
    return store


def ll_renditions() -> tuple[LlRendition, LlRendition]:
    video = LlRendition("video", "v", 12, 0.22, 2.0)
    audio = LlRendition("audio", "a", 12, 0.22, 2.0)
    for r in (video, audio):
        r.session_id = SESSION
        r.set_init(b"init")
    video.peers, audio.peers = [audio], [video]
    audio.td_source = video
    for msn in range(10):
        for r in (video, audio):
            for i in range(10):
                r.add_part(
                    b"p",
                    0.2,
                    i == 0 or r is audio,
                    i == 0,
                    i == 9,
                    EPOCH + msn * 2 + i * 0.2,
                    now=float(msn * 2),
                    samples=6,
                )
    for i in range(3):
        video.add_part(b"p", 0.2, i == 0, i == 0, False, EPOCH + 20 + i * 0.2, now=20.0, samples=6)
    return video, audio


def card(n: int, start: float, **attributes: str | int | float) -> DateRange:
    return DateRange(
        f"card-{n}",
        start,
        "com.mediacore.product",
        30.0,
        (("X-PRODUCT-ID", f"sku-{n}"), *((f"X-{k.upper()}", v) for k, v in attributes.items())),
    )


def hls_store_with_cards() -> HlsStore:
    """Cards in segments 1, 3 (two of them, one with a comma in a value), 5 and 8; after 9
    segments the first has left with its segment."""
    store = HlsStore(window_segments=6, segment_duration=2.0)
    store.session_id = SESSION
    cards = {1: [card(1, EPOCH + 2.4)], 3: [card(2, EPOCH + 6.1, title="Mug, blue", price=12.5), card(3, EPOCH + 6.9)]}
    cards[5] = [card(4, EPOCH + 10.0)]
    cards[8] = [card(5, EPOCH + 16.7, stock=3)]
    for i in range(9):
        store.add_segment(2.0, b"ts", EPOCH + 2 * i, i == 6, float(2 * i), cards.get(i, []))
    return store


def ll_with_cards() -> LlRendition:
    """A video rendition whose cards start in part 3 of MSN 1 (removed by now), part 0 of
    MSN 4, part 5 of MSN 9 and part 1 of the parent in progress."""
    video = LlRendition("video", "v", 8, 0.22, 2.0)
    video.session_id = SESSION
    video.set_init(b"init")
    cards = {(1, 3): card(1, EPOCH + 2.6), (4, 0): card(2, EPOCH + 8), (9, 5): card(3, EPOCH + 19, price=5)}
    cards[(10, 1)] = card(4, EPOCH + 20.2)
    for msn in range(11):
        for i in range(10 if msn < 10 else 3):
            t = msn * 2 + i * 0.2
            pinned = [cards[(msn, i)]] if (msn, i) in cards else []
            video.add_part(b"p", 0.2, i == 0, i == 0, i == 9, EPOCH + t, t, 6, dateranges=pinned)
    return video


def multivariant() -> MultivariantPlaylist:
    return MultivariantPlaylist(
        variants=[
            Variant("ll/video.m3u8", 2_400_000, 2_100_000, ("avc1.64001f", "mp4a.40.2"), (1280, 720), 30.0, "aac")
        ],
        audio=[AudioRendition("aac", "main", "ll/audio.m3u8", 2)],
    )


def rendered() -> dict[str, str]:
    store = hls_store()
    video, audio = ll_renditions()
    out = {
        "hls_live.m3u8": store.playlist_text(),
        "ll_video_full.m3u8": video.render(),
        "ll_video_delta.m3u8": video.render("YES"),
        "ll_video_delta_v2.m3u8": video.render("v2"),
        "ll_audio_full.m3u8": audio.render(),
        "multivariant.m3u8": multivariant().render(),
    }
    store.end()
    out["hls_ended.m3u8"] = store.playlist_text()
    out["hls_dateranges.m3u8"] = hls_store_with_cards().playlist_text()
    cards = ll_with_cards()
    out["ll_dateranges_full.m3u8"] = cards.render()
    out["ll_dateranges_delta.m3u8"] = cards.render("YES")
    out["ll_dateranges_delta_v2.m3u8"] = cards.render("v2")
    return out


@pytest.mark.parametrize("name", sorted(rendered()))
def test_rendered_playlist_matches_golden(name: str) -> None:
    text = rendered()[name]
    path = GOLDEN / name
    if os.environ.get("MEDIACORE_WRITE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.m3u8")), ids=lambda p: p.name)
def test_golden_playlists_round_trip(path: Path) -> None:
    text = path.read_text()
    if path.name.startswith("multivariant"):
        assert MultivariantPlaylist.parse(text).render() == text
        assert MultivariantPlaylist.parse(text) == multivariant()
    else:
        assert MediaPlaylist.parse(text).render() == text


def shape(pl: MediaPlaylist) -> tuple[object, ...]:
    """A playlist with durations at the precision they are written (five decimals)."""
    segments = [
        (
            s.msn,
            s.uri,
            round(s.duration, 5),
            s.program_date_time,
            s.discontinuity,
            s.gap,
            s.map_uri,
            [(p.uri, round(p.duration, 5), p.independent, p.gap) for p in s.parts],
            [dr.render() for _, dr in s.dateranges],
        )
        for s in pl.segments
    ]
    return (
        pl.target_duration,
        pl.version,
        pl.media_sequence,
        pl.discontinuity_sequence,
        pl.independent_segments,
        pl.ended,
        pl.server_control,
        pl.part_target,
        pl.skipped_segments,
        pl.recently_removed_dateranges,
        [dr.render() for dr in pl.skipped_dateranges],
        pl.preload_hint,
        pl.rendition_reports,
        segments,
    )


def test_stores_render_the_playlist_they_describe() -> None:
    """The dataclass a store builds is what its text parses back to: nothing is only in
    the text, nothing is lost on the way."""
    store = hls_store()
    assert shape(MediaPlaylist.parse(store.playlist_text())) == shape(store.playlist())
    video, _ = ll_renditions()
    for skip in (None, "YES", "v2"):
        assert shape(MediaPlaylist.parse(video.render(skip))) == shape(video.playlist(skip))
    store = hls_store_with_cards()
    assert shape(MediaPlaylist.parse(store.playlist_text())) == shape(store.playlist())
    cards = ll_with_cards()
    for skip in (None, "YES", "v2"):
        assert flat_dateranges(MediaPlaylist.parse(cards.render(skip))) == flat_dateranges(cards.playlist(skip))


def flat_dateranges(pl: MediaPlaylist) -> list[str]:
    """The date ranges in playlist order (where a delta's skipped ones sit is not in the text)."""
    return [dr.render() for dr in pl.skipped_dateranges] + [dr.render() for s in pl.segments for _, dr in s.dateranges]


def test_parser_refuses_broken_playlists() -> None:
    good = (GOLDEN / "ll_video_full.m3u8").read_text()
    with pytest.raises(ValueError, match="EXTM3U"):
        MediaPlaylist.parse(good.replace("#EXTM3U\n", ""))
    with pytest.raises(ValueError, match="more than once"):  # P6
        MediaPlaylist.parse(good.replace("#EXT-X-VERSION:6\n", "#EXT-X-VERSION:6\n#EXT-X-VERSION:6\n"))
    lines = good.splitlines()
    first_part = next(i for i, ln in enumerate(lines) if ln.startswith("#EXT-X-PART:"))
    lines.insert(first_part + 1, "#EXT-X-DISCONTINUITY")
    with pytest.raises(ValueError, match="L6"):
        MediaPlaylist.parse("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="no EXTINF"):
        MediaPlaylist.parse("#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg.ts\n")

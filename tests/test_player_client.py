"""The player client's playlist reading: full and delta playlists place parts identically; GAP parts
and segments are marked so the players skip them without a request."""

from test_llhls_units import rendition_with

from player_client.player import parse_media_playlist


def test_delta_and_full_playlists_give_the_same_parts_and_hint():
    r = rendition_with(parents=20, parts_in_progress=3)
    full = parse_media_playlist(r.render())
    delta = parse_media_playlist(r.render("YES"))
    assert "#EXT-X-SKIP" in r.render("YES")
    assert [(p.key, p.uri, p.start) for p in full.parts] == [(p.key, p.uri, p.start) for p in delta.parts]
    assert [s.key for s in full.segments][-5:] == [s.key for s in delta.segments][-5:]
    assert full.hint == delta.hint == r.part_uri(*r.next_part())
    assert full.can_block and full.can_skip and full.low_latency
    assert full.part_hold_back == 0.66


def test_gap_parts_and_segments_are_marked_for_skipping():
    r = rendition_with(parents=2, parts_in_progress=0)
    for i in range(10):
        r.add_part(b"", 0.2, False, i == 0, i == 9, 1004.0 + i * 0.2, now=3.0, gap=True)
    r.add_part(b"p", 0.2, True, True, False, 1006.0, now=4.0, samples=6)
    pl = parse_media_playlist(r.render())
    gap_msn = r.segments[-1].msn
    assert [m.gap for m in pl.segments] == [False, False, True]
    assert all(p.gap == (p.key[0] == gap_msn) for p in pl.parts) and sum(p.gap for p in pl.parts) == 10
    assert pl.parts[-1].independent and not pl.parts[-1].gap

"""The player client's playlist reading: full and delta playlists place parts identically."""

from player_client.player import parse_media_playlist
from test_llhls_units import rendition_with


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

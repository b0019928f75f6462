"""A packager that raises: restarted on the same playlist after EXT-X-DISCONTINUITY, within
[hls] max_packager_restarts per packager_restart_window; past that the stream is failed
(API, /healthz, ENDLIST, publisher disconnected). The pure parts first, then a real ffmpeg
push with faults injected into one stream's packagers beside a healthy stream."""

from __future__ import annotations

import asyncio

from mediacore.app.supervision import RestartBudget
from mediacore.playlist.media import MediaPlaylist
from mediacore.store.hls import HlsStore
from mediacore.store.ll import LlRendition


def test_restart_budget_counts_restarts_within_the_window() -> None:
    budget = RestartBudget(limit=3, window=60.0)
    assert [budget.allow("a", "hls", t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert budget.restarts("a", "hls") == 3
    assert not budget.allow("a", "hls", 3.0)  # a fourth error within 60 s: the stream fails
    assert budget.allow("a", "llhls", 3.0) and budget.allow("b", "hls", 3.0)  # counted per stream and output
    assert budget.allow("a", "hls", 60.5)  # the restart at 0 s has left the window
    budget.forget("a")
    assert budget.restarts("a", "hls") == 0 and budget.restarts("b", "hls") == 1
    assert not RestartBudget(limit=0, window=60.0).allow("a", "hls", 0.0)


def test_hls_store_breaks_the_timeline_at_the_next_segment() -> None:
    store = HlsStore(6, 2.0)
    store.add_segment(2.0, b"a", 1000.0, False, 0.0)
    store.break_timeline()
    store.add_segment(2.0, b"b", 1010.0, False, 1.0)
    store.add_segment(2.0, b"c", 1012.0, False, 2.0)
    assert [s.discontinuity for s in store.segments] == [False, True, False]
    pl = MediaPlaylist.parse(store.playlist_text())
    assert [s.discontinuity for s in pl.segments] == [False, True, False] and pl.media_sequence == 0


async def test_ll_rendition_breaks_the_timeline_and_wakes_blocked_requests() -> None:
    r = LlRendition("video", "v", 20, 0.22, 2.0)
    r.set_init(b"init-1")
    for i in range(10):  # one complete parent
        r.add_part(b"p", 0.2, i == 0, i == 0, i == 9, 1000.0 + i * 0.2, now=1.0, samples=6)
    for i in range(3):  # a parent in progress when the packager fails
        r.add_part(b"q", 0.2, i == 0, i == 0, False, 1002.0 + i * 0.2, now=2.0, samples=6)
    assert r.next_part() == (1, 3)  # the preload hint names part 3 of MSN 1
    waiter = asyncio.ensure_future(r.changed.wait(5.0))
    await asyncio.sleep(0)
    r.break_timeline(now=3.0)
    assert await waiter  # blocked requests wake
    assert r.current is None and r.last_complete_msn() == 1 and r.next_part() == (2, 0)
    # A playlist request blocked on the abandoned part waits for part 0 of MSN 2 (B3) ...
    assert not r.has(1, 3) and not r.has(2, 0)
    assert r.resource(r.part_uri(1, 3), now=3.0) is None  # and the part itself is 404 (H7)
    r.set_init(b"init-2")  # the restarted packager writes its init
    r.add_part(b"r", 0.2, True, True, False, 1010.0, now=4.0, samples=6)
    assert r.has(1, 3)  # ... which the restarted packager's first part satisfies
    pl = MediaPlaylist.parse(r.render())
    assert [(s.msn, s.discontinuity) for s in pl.segments] == [(0, False), (1, False), (2, True)]
    assert abs(pl.segments[1].duration - 0.6) < 1e-3  # ended with the parts it had
    assert pl.segments[2].map_uri != pl.segments[1].map_uri and len(pl.segments[2].parts) == 1
    assert pl.preload_hint == r.part_uri(2, 1)

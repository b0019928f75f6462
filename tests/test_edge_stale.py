"""The edge's freshness and stale-if-error rules over real HTTP, on a clock the test moves.

A small aiohttp upstream stands in for the origin (a playlist with max-age=1, a segment with a
long max-age, a 404 for a stream that is not live); the edge in front of it reads time only
from a FakeClock. Time passes by `clock.advance(...)`, never by sleeping, so the windows are
checked exactly and quickly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from edge.server import EdgeConfig, EdgeNode, run_edge

PLAYLIST = "/live/s/index.m3u8"
SEGMENT = "/live/s/seg1.ts"
MISSING = "/live/gone/index.m3u8"
"""A stream that is not live: its 404 is kept negative_ttl (a media 404 is kept less: test_abuse_edge.py)."""
SEGMENT_BYTES = bytes(range(256)) * 64


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Upstream:
    """An origin in miniature on a free loopback port; it counts the requests it answers."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def serve(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        if request.path == PLAYLIST:  # a new version on every fetch, as a live playlist would be
            body = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{self.requests[PLAYLIST]}\n"
            return web.Response(
                text=body, content_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "max-age=1"}
            )
        if request.path == SEGMENT:
            return web.Response(
                body=SEGMENT_BYTES, content_type="video/mp2t", headers={"Cache-Control": "max-age=3600"}
            )
        return web.Response(status=404, text="no such object", headers={"Cache-Control": "max-age=60"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Reply:
    status: int
    cache: str
    age: str
    body: bytes


@dataclass
class Rig:
    clock: FakeClock
    upstream: Upstream
    node: EdgeNode
    edge: str
    session: aiohttp.ClientSession

    async def get(self, path: str) -> Reply:
        async with self.session.get(self.edge + path) as r:
            return Reply(r.status, r.headers.get("X-Cache", ""), r.headers.get("Age", ""), await r.read())


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock()
    upstream = Upstream()
    await upstream.start()
    config = EdgeConfig(upstreams=[upstream.url], cache_mb=8, negative_ttl=1.0, stale_playlist_seconds=4.0)
    node = EdgeNode(config, clock=clock)
    runner, port = await run_edge(config, "127.0.0.1", 0, node)
    try:
        async with aiohttp.ClientSession() as session:
            yield Rig(clock, upstream, node, f"http://127.0.0.1:{port}", session)
    finally:
        await runner.cleanup()
        await upstream.stop()


async def test_playlist_is_a_hit_within_max_age_and_refetched_after(rig: Rig):
    first = await rig.get(PLAYLIST)
    assert (first.status, first.cache) == (200, "MISS")
    rig.clock.advance(0.9)
    again = await rig.get(PLAYLIST)
    assert (again.status, again.cache, again.age, again.body) == (200, "HIT", "0", first.body)
    assert rig.upstream.requests[PLAYLIST] == 1
    rig.clock.advance(0.1)  # max-age=1 reached: no longer fresh
    newer = await rig.get(PLAYLIST)
    assert (newer.status, newer.cache) == (200, "MISS") and newer.body != first.body
    assert rig.upstream.requests[PLAYLIST] == 2


async def test_upstream_404_is_reused_for_negative_ttl_only(rig: Rig):
    gone = await rig.get(MISSING)
    assert (gone.status, gone.cache) == (404, "MISS")
    rig.clock.advance(0.99)  # the upstream said max-age=60; negative_ttl (1 s) caps it
    cached = await rig.get(MISSING)
    assert (cached.status, cached.cache) == (404, "HIT")
    assert rig.upstream.requests[MISSING] == 1
    rig.clock.advance(0.01)
    asked = await rig.get(MISSING)
    assert (asked.status, asked.cache) == (404, "MISS")
    assert rig.upstream.requests[MISSING] == 2


async def test_upstream_down_stale_playlist_window_then_502_while_media_keeps_serving(rig: Rig):
    playlist = await rig.get(PLAYLIST)
    segment = await rig.get(SEGMENT)
    gone = await rig.get(MISSING)
    assert [r.status for r in (playlist, segment, gone)] == [200, 200, 404]
    await rig.upstream.stop()

    rig.clock.advance(0.5)  # everything still fresh: served without the upstream
    assert [(r.status, r.cache) for r in [await rig.get(p) for p in (PLAYLIST, SEGMENT, MISSING)]] == [
        (200, "HIT"),
        (200, "HIT"),
        (404, "HIT"),
    ]

    rig.clock.advance(1.5)  # 2 s: playlist past max-age, inside the 4 s stale window
    stale = await rig.get(PLAYLIST)
    assert (stale.status, stale.cache, stale.age, stale.body) == (200, "STALE", "2", playlist.body)
    expired_404 = await rig.get(MISSING)  # a 404 is never stretched past negative_ttl
    assert expired_404.status == 502 and b"upstream unavailable" in expired_404.body
    assert (await rig.get(SEGMENT)).cache == "HIT"

    rig.clock.advance(2.0)  # 4 s: the last moment of the window
    assert (await rig.get(PLAYLIST)).cache == "STALE"
    rig.clock.advance(0.01)  # past the window: a clear error instead of a frozen live playlist
    late = await rig.get(PLAYLIST)
    assert late.status == 502 and b"upstream unavailable" in late.body

    rig.clock.advance(3600.0)  # the segment outlives its own max-age: media never changes
    old = await rig.get(SEGMENT)
    assert (old.status, old.cache, old.body) == (200, "STALE", SEGMENT_BYTES)

    assert rig.upstream.requests == Counter({PLAYLIST: 1, SEGMENT: 1, MISSING: 1})
    stale_served = rig.node.registry.get_sample_value("mediacore_edge_stale_served_total")
    assert stale_served == 3  # two playlists inside the window, one segment

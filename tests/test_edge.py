"""Edge nodes in front of a live origin: tiers, collapsing stampedes, playback through them."""

from __future__ import annotations

import asyncio
import resource
import time

import aiohttp
import pytest
import pytest_asyncio
from conftest import (
    ffmpeg_push_cmd,
    local_config,
    make_clip,
    play_in_browser,
    playback_story,
    start_process,
    stop_process,
    until,
)

from edge.server import EdgeConfig, run_edge
from mediacore.app.engine import Engine
from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.uris import ll_part_uri, parse_ll_media
from player_client.lean import run_lean_viewers
from player_client.llhls import follow

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
SEGMENT_ROUTE = "/live/{stream}/{segment}.ts"
LL_MEDIA_ROUTE = "/live/{stream}/ll/{name}.{ext}"


def origin_count(engine: Engine, route: str) -> float:
    value = engine.metrics.registry.get_sample_value("mediacore_http_requests_total", {"route": route, "status": "200"})
    return value or 0.0


class Setup:
    def __init__(self, engine: Engine, edge_port: int, mid_port: int) -> None:
        self.engine = engine
        self.edge = f"http://127.0.0.1:{edge_port}"
        self.mid = f"http://127.0.0.1:{mid_port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tiers():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    config = local_config(admin={"port": 0})
    engine = Engine(config)
    await engine.start()
    origin = f"http://127.0.0.1:{engine.http_port}"
    mid_runner, mid_port = await run_edge(EdgeConfig(upstreams=[origin], cache_mb=64), "127.0.0.1", 0)
    edge_runner, edge_port = await run_edge(
        EdgeConfig(upstreams=[f"http://127.0.0.1:{mid_port}"], cache_mb=64), "127.0.0.1", 0
    )
    pusher = await start_process(
        *ffmpeg_push_cmd(make_clip(), f"rtmp://127.0.0.1:{engine.rtmp_port}/live/tv", loop=True)
    )
    try:
        for _ in range(200):
            store = engine.stores.get("tv")
            lls = engine.ll_renditions.get("tv")
            if store and store.ready and len(store.segments) >= 2 and lls and all(r.ready for r in lls.values()):
                break
            await asyncio.sleep(0.1)
        yield Setup(engine, edge_port, mid_port)
    finally:
        await stop_process(pusher)
        await edge_runner.cleanup()
        await mid_runner.cleanup()
        await engine.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def stampede(url: str, n: int = 1000) -> list[tuple[int, bytes, str]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> tuple[int, bytes, str]:
            async with session.get(url) as r:
                return r.status, await r.read(), r.headers.get("X-Cache", "")

        return await asyncio.gather(*(one() for _ in range(n)))


async def test_stampede_on_an_uncached_segment_is_one_upstream_request(tiers):
    store = tiers.engine.stores["tv"]
    for _ in range(50):  # a segment nobody has asked for yet
        await asyncio.sleep(0.1)
        if len(store.segments) >= 3:
            break
    uri = store.segments[-1].uri
    before = origin_count(tiers.engine, SEGMENT_ROUTE)
    results = await stampede(f"{tiers.edge}/live/tv/{uri}")
    assert origin_count(tiers.engine, SEGMENT_ROUTE) - before == 1
    assert {status for status, _, _ in results} == {200}
    stored = store.segments[-1] if store.segments[-1].uri == uri else store.get_segment(uri, 0.0)
    assert {body for _, body, _ in results} == {bytes(stored.data)}
    assert {state for _, _, state in results} <= {"MISS", "HIT"}


async def test_stampede_on_a_part_not_yet_published_is_one_upstream_request(tiers):
    video = tiers.engine.ll_renditions["tv"][next(iter(tiers.engine.ll_renditions["tv"]))]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{tiers.edge}/live/tv/ll/video.m3u8") as r:
            hinted = MediaPlaylist.parse(await r.text()).preload_hint
    assert video.resource(hinted, 0.0) is None  # not published yet
    before = origin_count(tiers.engine, LL_MEDIA_ROUTE)
    results = await stampede(f"{tiers.edge}/live/tv/ll/{hinted}")
    assert origin_count(tiers.engine, LL_MEDIA_ROUTE) - before == 1
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, body, _ in results}) == 1


async def test_blocking_playlist_requests_collapse_by_normalised_key(tiers):
    video = tiers.engine.ll_renditions["tv"][next(iter(tiers.engine.ll_renditions["tv"]))]
    msn, part = video.next_part()
    route = "/live/{stream}/ll/{rendition}.m3u8"
    before = origin_count(tiers.engine, route)
    queries = [
        f"_HLS_msn={msn}&_HLS_part={part}",
        f"_HLS_part={part}&_HLS_msn={msn}",
        f"_HLS_msn={msn}&_HLS_part={part}&token=viewer-specific",
        f"_HLS_msn=00{msn}&_HLS_part=0{part}",  # leading zeros: the same integers
        f"_HLS_msn={msn}&_HLS_part={part}&_HLS_skip=x",  # a skip the origin ignores
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(q: str) -> int:
            async with session.get(f"{tiers.edge}/live/tv/ll/video.m3u8?{q}") as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one(queries[i % len(queries)]) for i in range(300)))
    assert set(statuses) == {200}
    assert origin_count(tiers.engine, route) - before == 1


async def ask_for_the_part_after_the_hint(session: aiohttp.ClientSession, ll_base: str) -> tuple[str, str]:
    """Ask for the part after the preload hint until the answer is a 404 (a hint early in its
    parent, so that part is in the same parent); returns (its URI, the 404's Cache-Control)."""
    for _ in range(200):
        async with session.get(f"{ll_base}/video.m3u8") as r:
            hint = MediaPlaylist.parse(await r.text()).preload_hint
        name = parse_ll_media(hint.removesuffix(".m4s")) if hint else None
        if name is not None and name.part is not None and name.part <= 5:
            after = ll_part_uri(name.prefix, name.session, name.msn, name.part + 1)
            async with session.get(f"{ll_base}/{after}") as r:
                if r.status == 404:
                    return after, r.headers["Cache-Control"]
        await asyncio.sleep(0.05)
    raise AssertionError("no 404 for the part after the hint")


async def test_a_404_for_the_part_after_the_hint_poisons_neither_tier(tiers):
    video = tiers.engine.ll_renditions["tv"][next(iter(tiers.engine.ll_renditions["tv"]))]
    async with aiohttp.ClientSession() as session:
        after, told = await ask_for_the_part_after_the_hint(session, f"{tiers.edge}/live/tv/ll")
        await until(lambda: video.resource(after, 0.0) is not None, 5, f"part {after}", 0.01)
        async with session.get(f"{tiers.edge}/live/tv/ll/{after}") as r:  # was: the 404 again, from either tier
            assert r.status == 200, (r.status, r.headers.get("X-Cache"))
            assert await r.read() == video.resource(after, 0.0)
    assert told == "no-store"


async def test_hlsjs_and_player_client_play_through_two_tiers(tiers):
    hls = await play_in_browser(f"{tiers.edge}/watch/tv?ll=0", seconds=10)
    assert hls["started"] and hls["advanced"] >= 9 and hls["fatal"] is None, hls
    ll = await play_in_browser(f"{tiers.edge}/watch/tv?ll=1", seconds=15)
    assert ll["started"] and ll["advanced"] >= 14 and ll["fatal"] is None, ll
    assert ll["stallsAfterStart"] == 0, playback_story(ll)
    stats = await follow(f"{tiers.edge}/live/tv/ll.m3u8", 6)
    assert stats.parts >= 20 and not stats.errors
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{tiers.edge}/metrics") as r:
            text = await r.text()
    assert "mediacore_edge_hits_total" in text and "mediacore_edge_cache_bytes" in text


async def test_lean_viewers_play_through_two_tiers_at_one_origin_request_per_part(tiers):
    before, started = origin_count(tiers.engine, LL_MEDIA_ROUTE), time.monotonic()
    stats = await run_lean_viewers(f"{tiers.edge}/live/tv/ll.m3u8", 50, 6)
    produced = (time.monotonic() - started) / 0.2  # parts of 0.2 s published meanwhile
    assert all(s.startup_seconds is not None and not s.errors for s in stats), [s.errors for s in stats][:3]
    assert all(s.requests >= 40 for s in stats)  # a reload and a part per 0.2 s part, about
    delays = sorted(d for s in stats for d in s.part_delays)
    assert len(delays) >= 50 * 15 and delays[len(delays) // 2] < 1.0
    parts = origin_count(tiers.engine, LL_MEDIA_ROUTE) - before
    # Each part once, not once per viewer (50 x 30): those published meanwhile, the init, and the
    # join backlog (from the independent part PART-HOLD-BACK behind the edge: a segment's parts and more).
    assert parts <= produced + 1 + 20

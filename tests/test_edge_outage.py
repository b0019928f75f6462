"""The origin goes away for 10 s under 200 simulated viewers behind an edge: cached media
keeps serving, playlists go stale only within the window and then fail clearly, and on
recovery every object is fetched from the origin once; no viewer task is left behind.

This is the real-time end-to-end check (real ffmpeg, real clock); the same rules are checked
exactly on a fake clock in test_edge_stale.py. Upstream fetches are counted from the edge's
debug log line ("edge: upstream fetch <key>"), captured with caplog."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable

import aiohttp
import pytest
from conftest import ffmpeg_push_cmd, make_clip, start_process, stop_process

from edge.server import EdgeConfig, EdgeNode, run_edge
from player_client.player import Viewer, ViewerStats, summarize

pytestmark = pytest.mark.slow
VIEWERS = 200
VIEW_SECONDS = 36.0
FETCH_LINE = "edge: upstream fetch %s"


def upstream_fetches(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Keys the edge fetched from the origin, in order, one per upstream fetch."""
    return [
        str(r.args[0])
        for r in caplog.records
        if r.name == "mediacore.edge" and r.msg == FETCH_LINE and isinstance(r.args, tuple)
    ]


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition every 50 ms; fail with `what` if it does not hold within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_origin_outage_under_200_viewers(engine, caplog):
    caplog.set_level(logging.DEBUG, logger="mediacore.edge")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    publish_url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/show"
    pusher = await start_process(*ffmpeg_push_cmd(make_clip(), publish_url, loop=True))
    config = EdgeConfig(upstreams=[f"http://127.0.0.1:{engine.http_port}"], stale_playlist_seconds=4.0)
    node = EdgeNode(config)
    runner, port = await run_edge(config, "127.0.0.1", 0, node)
    edge = f"http://127.0.0.1:{port}"
    viewer_session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=VIEW_SECONDS)
    )
    viewers: asyncio.Future[list[ViewerStats]] | None = None
    try:

        def live() -> bool:
            store = engine.stores.get("show")
            return bool(store and store.ready and len(store.segments) >= 3)

        await wait_until(live, 20, "three segments from ffmpeg")
        players = [Viewer(f"{edge}/live/show/index.m3u8", viewer_session, low_latency=False) for _ in range(VIEWERS)]
        viewers = asyncio.gather(*(p.run(VIEW_SECONDS) for p in players))
        await wait_until(
            lambda: all(p.stats.startup_seconds is not None for p in players) or viewers.done(),
            20,
            "every viewer to start playing through the edge",
        )
        # Segments the edge holds: the fetch log line is written when a fetch starts, and the
        # newest segment's fetch may still be on its way when the origin stops.
        cached = [k for k in upstream_fetches(caplog) if k.endswith(".ts") and node.cache.get(k) is not None]
        assert cached, "viewers fetched no segment through the edge"

        await engine.stop_http()
        down = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{edge}{cached[-1]}") as r:  # cached media keeps serving
                assert r.status == 200 and r.headers["X-Cache"] in ("HIT", "STALE")
            async with session.get(f"{edge}/live/show/index.m3u8") as r:  # stale, inside the window
                assert r.status == 200
            await asyncio.sleep(5.0)  # real outage time: past the 4 s stale-playlist window
            async with session.get(f"{edge}/live/show/index.m3u8") as r:  # past the window: clear error
                assert r.status == 502 and "upstream unavailable" in await r.text()
            await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - down)))  # real outage time: 10 s in all
            before = len(upstream_fetches(caplog))
            await engine.start_http()
            await asyncio.sleep(6.0)  # real recovery time: 200 viewers rejoin; a herd would happen in here
            async with session.get(f"{edge}/live/show/index.m3u8") as r:
                assert r.status == 200
        after = Counter(upstream_fetches(caplog)[before:])
        segments = {k: n for k, n in after.items() if k.endswith(".ts")}
        assert segments and all(n == 1 for n in segments.values()), segments  # no herd on recovery
        # The playlist is refetched once per max-age (1 s), not once per viewer.
        assert after["/live/show/index.m3u8"] <= 10, after

        stats = await asyncio.wait_for(viewers, 60)
        finished = time.monotonic()
        summary = summarize(stats)
        assert summary["started"] == VIEWERS
        assert summary["errors"] > 0  # viewers did see the outage (clear 502s) ...
        playing_again = [s for s in stats if finished - s.last_playing < 4.0]
        assert len(playing_again) == VIEWERS  # ... and all were playing again at the end
        leftover = [t for t in asyncio.all_tasks() if "Viewer" in repr(t.get_coro())]
        assert leftover == []
        assert node.collapser.inflight == 0
    finally:
        if viewers is not None and not viewers.done():  # a failed assertion above: stop the viewers
            viewers.cancel()
            await asyncio.gather(viewers, return_exceptions=True)
        await viewer_session.close()
        await runner.cleanup()
        await stop_process(pusher)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

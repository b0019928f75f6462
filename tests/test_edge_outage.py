"""The origin goes away for 10 s under 200 simulated viewers behind an edge: cached media
keeps serving, playlists go stale only within the window and then fail clearly, and on
recovery every object is fetched from the origin once; no viewer task is left behind."""

from __future__ import annotations

import asyncio
import resource
import time

import aiohttp
import pytest

from conftest import ffmpeg_push_cmd, make_clip, start_process, stop_process
from edge.server import EdgeConfig, EdgeNode, run_edge
from player_client.player import run_viewers, summarize

pytestmark = pytest.mark.slow


async def test_origin_outage_under_200_viewers(engine):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
    pusher = await start_process(*ffmpeg_push_cmd(make_clip(), f"rtmp://127.0.0.1:{engine.rtmp_port}/live/show", loop=True))
    config = EdgeConfig(upstreams=[f"http://127.0.0.1:{engine.http_port}"], stale_playlist_seconds=4.0)
    node = EdgeNode(config)
    runner, port = await run_edge(config, "127.0.0.1", 0, node)
    edge = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            store = engine.stores.get("show")
            if store and store.ready and len(store.segments) >= 3:
                break
            await asyncio.sleep(0.1)
        viewers = asyncio.create_task(run_viewers(f"{edge}/live/show/index.m3u8", 200, 36, low_latency=False))
        await asyncio.sleep(8)
        cached = [k for k in node.fetches if k.endswith(".ts")]
        assert cached, "viewers fetched no segment through the edge"

        await engine.stop_http()
        down = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{edge}{cached[-1]}") as r:  # cached media keeps serving
                assert r.status == 200 and r.headers["X-Cache"] in ("HIT", "STALE")
            async with session.get(f"{edge}/live/show/index.m3u8") as r:  # stale, inside the window
                assert r.status == 200
            await asyncio.sleep(5.0)
            async with session.get(f"{edge}/live/show/index.m3u8") as r:  # past the window: clear error
                assert r.status == 502 and "upstream unavailable" in await r.text()
            await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - down)))
            before = dict(node.fetches)
            await engine.start_http()
            await asyncio.sleep(6.0)
            async with session.get(f"{edge}/live/show/index.m3u8") as r:
                assert r.status == 200
        after = {k: n - before.get(k, 0) for k, n in node.fetches.items() if n - before.get(k, 0) > 0}
        segments = {k: n for k, n in after.items() if k.endswith(".ts")}
        assert segments and all(n == 1 for n in segments.values()), segments  # no herd on recovery
        # The playlist is refetched once per max-age (1 s), not once per viewer.
        assert after.get("/live/show/index.m3u8", 0) <= 10, after

        stats = await asyncio.wait_for(viewers, 60)
        finished = time.monotonic()
        summary = summarize(stats)
        assert summary["started"] == 200
        assert summary["errors"] > 0  # viewers did see the outage (clear 502s) ...
        playing_again = [s for s in stats if finished - s.last_playing < 4.0]
        assert len(playing_again) == 200  # ... and all were playing again at the end
        leftover = [t for t in asyncio.all_tasks() if "Viewer" in repr(t.get_coro())]
        assert leftover == []
        assert node.collapser.inflight == 0
    finally:
        await runner.cleanup()
        await stop_process(pusher)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

"""SIGTERM drains a real `mediacore serve` process: ingest closes and the publisher is
disconnected, the open segment is written, every playlist (HLS and both LL-HLS renditions)
gets EXT-X-ENDLIST, HTTP keeps serving the last media for [server] drain_grace, and the
process exits 0 within [server] drain_timeout. A second signal stops at once."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from conftest import (
    ffmpeg_push_cmd,
    ffprobe_frames,
    free_port,
    require_tool,
    start_process,
    stop_process,
    wait_for_playlist,
)
from test_lifecycle import VIDEO

from benchmarks.servers import start_serve
from mediacore.app.config import Config
from mediacore.app.engine import Engine
from mediacore.hub.publisher import PublishAttempt
from mediacore.model.media import Frame
from mediacore.packager.hls import HlsPackager
from mediacore.playlist.media import MediaPlaylist

pytestmark = pytest.mark.slow

DRAIN_TIMEOUT = 8.0
DRAIN_GRACE = 3.0


class Server:
    def __init__(self, proc: asyncio.subprocess.Process, rtmp_port: int, http_port: int, log: Path) -> None:
        self.proc = proc
        self.rtmp_port = rtmp_port
        self.http_port = http_port
        self.log = log


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """`mediacore serve` from this tree, on free ports, with a short drain."""
    rtmp_port, rtsp_port, http_port = free_port(), free_port(), free_port()
    config = tmp_path / "mediacore.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nrtmp_port = {rtmp_port}\nrtsp_port = {rtsp_port}\nhttp_port = {http_port}\n'
        f"drain_timeout = {DRAIN_TIMEOUT}\ndrain_grace = {DRAIN_GRACE}\ndata_dir = {str(tmp_path / 'data')!r}\n"
    )
    log = tmp_path / "server.log"
    proc = await start_serve(config, log)
    try:
        yield Server(proc, rtmp_port, http_port, log)
    finally:
        await stop_process(proc)


async def test_sigterm_drains_ends_every_playlist_and_exits_0(server: Server, clip: Path, tmp_path: Path) -> None:
    require_tool("ffmpeg")
    push = await start_process(*ffmpeg_push_cmd(clip, f"rtmp://127.0.0.1:{server.rtmp_port}/live/shop", loop=True))
    http = aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}")
    try:
        text = await wait_for_playlist(server.http_port, "shop", segments=3)
        # Signal about a second into a segment, so one is open and must be finished.
        listed = MediaPlaylist.parse(text).segments[-1].msn
        while MediaPlaylist.parse(text).segments[-1].msn == listed:
            await asyncio.sleep(0.1)
            async with http.get("/live/shop/index.m3u8") as r:
                text = await r.text()
        await asyncio.sleep(1.0)
        async with http.get("/live/shop/index.m3u8") as r:
            before = MediaPlaylist.parse(await r.text())
        async with http.get("/live/shop/ll/video.m3u8") as r:
            assert r.status == 200
            ll = MediaPlaylist.parse(await r.text())
        # A blocked LL-HLS request for a parent that will never come: the drain answers it.
        blocked = asyncio.ensure_future(http.get(f"/live/shop/ll/video.m3u8?_HLS_msn={ll.segments[-1].msn + 2}"))
        await asyncio.sleep(0.2)
        assert not blocked.done()
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)

        async with await blocked as r:
            assert r.status == 200 and "#EXT-X-ENDLIST" in await r.text()
        assert time.monotonic() - signalled < 2.0
        # During the drain: the ended playlist (once the last segment is muxed), that segment
        # written and fetchable.
        for _ in range(40):
            async with http.get("/live/shop/index.m3u8") as r:
                ended = MediaPlaylist.parse(await r.text())
            if ended.ended:
                break
            await asyncio.sleep(0.05)
        assert ended.ended, server.log.read_text()[-3000:]
        last = ended.segments[-1]
        assert last.msn == before.segments[-1].msn + 1 and 0.5 < last.duration < 2.0  # the open segment
        async with http.get(f"/live/shop/{last.uri}") as r:
            assert r.status == 200
            (tmp_path / "last.ts").write_bytes(await r.read())
        assert await ffprobe_frames(tmp_path / "last.ts") >= 15
        for rendition in ("video", "audio"):
            async with http.get(f"/live/shop/ll/{rendition}.m3u8") as r:
                body = await r.text()
            assert "\n#EXT-X-ENDLIST\n" in body and "#EXT-X-PRELOAD-HINT" not in body, body
        async with http.get("/healthz") as r:
            assert r.status == 503 and (await r.json())["status"] == "draining"
        # The publisher was disconnected; the process exits 0 within the bound.
        await asyncio.wait_for(push.wait(), 10)
        assert await asyncio.wait_for(server.proc.wait(), DRAIN_TIMEOUT + 5) == 0
        took = time.monotonic() - signalled
        assert DRAIN_GRACE - 0.5 < took < DRAIN_TIMEOUT + 5, took
        log = server.log.read_text()
        assert "stopped by the server: the server is shutting down" in log and "drained" in log
    finally:
        await http.close()
        await stop_process(push)


async def test_a_second_signal_stops_at_once(server: Server) -> None:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.http_port}") as http:
        server.proc.send_signal(signal.SIGTERM)
        for _ in range(50):
            async with http.get("/healthz") as r:
                if r.status == 503:
                    break
            await asyncio.sleep(0.05)
        assert r.status == 503  # draining: balancers send no new viewers
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(server.proc.wait(), DRAIN_GRACE + 5) == 1
    assert time.monotonic() - signalled < 2.0


async def test_the_drain_is_bounded_when_a_packager_hangs(
    engine: Engine, config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: an HLS packager stuck muxing cannot hold the drain past drain_timeout; the
    LL-HLS playlists still end and nobody may publish any more."""
    config.server.drain_timeout, config.server.drain_grace = 1.0, 5.0
    stuck = asyncio.Event()

    async def hang(packager: HlsPackager, draft: object) -> None:
        stuck.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(HlsPackager, "_emit", hang)
    publisher = engine.hub.publish("shop")
    publisher.update_track(VIDEO)
    for i in range(130):  # two 2 s GOPs at 30 fps and the keyframe that closes the second
        publisher.send(Frame(VIDEO, i * 3000, i * 3000, i % 60 == 0, b"\x00\x00\x00\x02\x65\x88", 1000.0 + i / 30))
    await asyncio.wait_for(stuck.wait(), 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    caplog.set_level(logging.INFO, logger="mediacore")
    await engine.drain()
    assert 1.0 <= loop.time() - started < 1.5  # drain_timeout bounds the grace too
    assert "1 packager(s) did not finish within 1 s (hls-shop)" in caplog.text
    assert all(r.ended for r in engine.ll_renditions["shop"].values())
    assert engine.hub.get("shop").ended
    assert await engine.authorize_publish(PublishAttempt("other", "", "rtmp", "127.0.0.1")) is not None

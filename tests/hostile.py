"""A healthy ffmpeg stream that watches itself while a hostile peer does its worst.

Every abuse test runs its hostile peer beside one of these and then asks `check()`: the
healthy stream's playlist answered every poll within PLAYLIST_DEADLINE, it lost no frame,
and the server's memory grew by less than RSS_GROWTH_LIMIT. The engine runs in the test's
process, so a peer that freezes the event loop freezes the playlist poller too, and shows.
Like `mediacore serve`, which freezes its startup heap (mediacore/app/cli.py), the test's
process freezes its heap while the healthy stream runs: a full collection walking pytest's
heap (every test module, hypothesis, fixtures) stalls the loop for ~0.1 s by itself.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path
from types import TracebackType

import aiohttp
import psutil
from conftest import count_packets, ffmpeg_push_cmd, start_process, stop_process, until, wait_for_playlist

from mediacore.app.engine import Engine
from mediacore.model.media import Kind

PLAYLIST_DEADLINE = 0.1
"""Seconds within which every one of the healthy stream's playlist polls answers during the attack."""
RSS_GROWTH_LIMIT = 50 * 1024 * 1024
"""Bytes the server's resident memory may grow while the hostile peer runs."""
POLL_INTERVAL = 0.05


class HealthyStream:
    """`async with HealthyStream(engine, clip) as healthy:` runs ffmpeg over RTMP as stream
    `name`, polls its playlist, and on `check()` stops and judges."""

    def __init__(self, engine: Engine, clip: Path, name: str = "healthy", key: str = "") -> None:
        self.engine = engine
        self.key = key
        self.clip = clip
        self.name = name
        self.times: list[float] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._pusher: asyncio.subprocess.Process | None = None
        self._rss_before = 0

    async def __aenter__(self) -> HealthyStream:
        query = f"?key={self.key}" if self.key else ""
        url = f"rtmp://127.0.0.1:{self.engine.rtmp_port}/live/{self.name}{query}"
        self._pusher = await start_process(*ffmpeg_push_cmd(self.clip, url))
        await wait_for_playlist(self.engine.http_port, self.name, segments=1)
        gc.collect()
        gc.freeze()
        self._rss_before = psutil.Process(os.getpid()).memory_info().rss
        self._poller = asyncio.create_task(self._poll())
        return self

    async def _poll(self) -> None:
        url = f"http://127.0.0.1:{self.engine.http_port}/live/{self.name}/index.m3u8"
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                start = time.monotonic()
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        self.failures.append(f"playlist answered {resp.status}")
                self.times.append(time.monotonic() - start)
                await asyncio.sleep(POLL_INTERVAL)

    async def check(self) -> None:
        """Wait for ffmpeg to finish the clip, then assert the stream came through whole."""
        assert self._pusher is not None and self._poller is not None
        assert await asyncio.wait_for(self._pusher.wait(), 60) == 0, "the healthy ffmpeg push failed"
        stream = self.engine.hub.get(self.name)
        assert stream is not None
        expected = count_packets(self.clip)
        await until(lambda: stream.stats.frames[Kind.VIDEO] >= expected["video"], 5, "the healthy stream's frames")
        self._stop.set()
        await self._poller
        grown = psutil.Process(os.getpid()).memory_info().rss - self._rss_before
        assert self.failures == [], self.failures
        assert len(self.times) >= 10, self.times
        slowest = max(self.times)
        print(f"healthy playlist: {len(self.times)} polls, slowest {slowest * 1000:.1f} ms")
        assert slowest < PLAYLIST_DEADLINE, f"the healthy playlist took {slowest:.3f} s to answer"
        assert stream.stats.frames[Kind.VIDEO] == expected["video"]
        assert stream.stats.frames[Kind.AUDIO] == expected["audio"]
        assert sum(s.dropped for s in stream.subscribers) == 0, "a subscriber of the healthy stream dropped frames"
        assert grown < RSS_GROWTH_LIMIT, f"server memory grew by {grown / 2**20:.0f} MiB"

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._poller is not None:
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._pusher is not None:
            await stop_process(self._pusher)
        gc.unfreeze()

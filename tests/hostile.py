"""A healthy ffmpeg stream that watches itself while a hostile peer does its worst.

Every abuse test runs its hostile peer beside one of these and then asks `check()`: the
healthy stream's playlist answered every poll within PLAYLIST_DEADLINE, it lost no frame,
and the server's memory grew by less than RSS_GROWTH_LIMIT. The engine runs in the test's
process, so a peer that freezes the event loop freezes the playlist poller too, and shows.
Like `mediacore serve`, which freezes its startup heap (mediacore/app/cli.py), the test's
process freezes its heap while the healthy stream runs: a full collection walking pytest's
heap (every test module, hypothesis, fixtures) stalls the loop for ~0.1 s by itself.

A poll is judged by the time the server had: a second process (`StallProbe`) sleeps in
short steps and logs every step it overslept, i.e. when the machine ran none of our
processes (a virtual machine's host took the cores). The time a poll overlaps such a stall
is the machine's, not the server's; a server that freezes its own loop leaves the probe,
another process, on time, so its freeze counts in full.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import time
import traceback
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
PROBE_STEP = 0.005
"""Seconds the stall probe sleeps per step."""
PROBE_SLACK = 0.02
"""Oversleep (seconds) past which the probe logs a step as a machine stall."""

WATCH_STEP = 0.01
"""Seconds between the loop watch's looks at the event loop."""
WATCH_HELD = 0.05
"""A loop whose heartbeat is older than this (seconds) is held: the watch records its stack."""

PROBE = """
import sys, time
step, slack = float(sys.argv[1]), float(sys.argv[2])
print("ready", flush=True)
before = time.monotonic()
while True:
    time.sleep(step)
    now = time.monotonic()
    if now - before > step + slack:
        print(before + step, now, flush=True)
    before = now
"""
"""The probe's program: prints `ready`, then `START END` (CLOCK_MONOTONIC, shared by every
process) for each step it overslept, END - START being the stall."""


def unexplained(start: float, end: float, stalls: list[tuple[float, float]]) -> float:
    """Seconds of the interval [start, end] not covered by any of `stalls` (disjoint, as the
    probe logs them)."""
    covered = sum(max(0.0, min(end, b) - max(start, a)) for a, b in stalls)
    return max(0.0, (end - start) - covered)


class StallProbe:
    """`async with StallProbe() as probe:` runs the probe; `probe.stalls` lists the machine
    stalls it saw, as (start, end) in time.monotonic()."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StallProbe:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE, str(PROBE_STEP), str(PROBE_SLACK), stdout=asyncio.subprocess.PIPE
        )
        assert self._process.stdout is not None
        assert await asyncio.wait_for(self._process.stdout.readline(), 10) == b"ready\n"
        self._reader = asyncio.create_task(self._read(self._process.stdout))
        return self

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            a, b = line.split()
            self.stalls.append((float(a), float(b)))

    async def __aexit__(self, *exc: object) -> None:
        if self._process is not None:
            await stop_process(self._process)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class LoopWatch:
    """What held the event loop: a heartbeat task on the loop and a thread that looks at it
    every WATCH_STEP; while the heartbeat is older than WATCH_HELD, the loop thread's stack is
    recorded (once per distinct stack). Printed when a poll misses the deadline, so a failure
    names the code that kept the loop."""

    def __init__(self) -> None:
        self.held: list[tuple[float, float, str]] = []
        """(when, heartbeat age in seconds, the loop thread's stack), one per distinct stack."""
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(WATCH_STEP / 2)

    def _look(self, loop_thread: int) -> None:
        seen: set[str] = set()
        while not self._stop.wait(WATCH_STEP):
            age = time.monotonic() - self._beat
            if age < WATCH_HELD:
                continue
            frame = sys._current_frames().get(loop_thread)
            stack = "".join(traceback.format_stack(frame, limit=12)) if frame is not None else "(no frame)"
            if stack not in seen:
                seen.add(stack)
                self.held.append((time.monotonic(), age, stack))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        self._thread = threading.Thread(target=self._look, args=(threading.get_ident(),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._task is not None:
            self._task.cancel()

    def report(self, start: float, end: float) -> str:
        """The stacks recorded between `start` and `end` (time.monotonic()), or up to a
        WATCH_HELD after it: the watch may see a held loop only once it has let go."""
        found = [
            f"loop held {age * 1000:.0f} ms at:\n{stack}"
            for when, age, stack in self.held
            if start <= when <= end + WATCH_HELD
        ]
        return "\n".join(found) or "the loop watch saw the loop held at no point of it"


class HealthyStream:
    """`async with HealthyStream(engine, clip) as healthy:` runs ffmpeg over RTMP as stream
    `name`, polls its playlist, and on `check()` stops and judges."""

    def __init__(self, engine: Engine, clip: Path, name: str = "healthy", key: str = "") -> None:
        self.engine = engine
        self.key = key
        self.clip = clip
        self.name = name
        self.polls: list[tuple[float, float]] = []
        """(start, end) of each playlist poll, in time.monotonic()."""
        self.probe = StallProbe()
        self.watch = LoopWatch()
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._pusher: asyncio.subprocess.Process | None = None
        self._rss_before = 0
        self._expected: dict[str, int] = {}
        """The clip's packets per kind (ffprobe), counted before the polls start."""

    async def __aenter__(self) -> HealthyStream:
        query = f"?key={self.key}" if self.key else ""
        url = f"rtmp://127.0.0.1:{self.engine.rtmp_port}/live/{self.name}{query}"
        # ffprobe runs (and holds the loop) now, not while the polls are timed: counting the
        # clip in check() held a poll for 110 ms, which the loop watch named.
        self._expected = count_packets(self.clip)
        await self.probe.__aenter__()
        self._pusher = await start_process(*ffmpeg_push_cmd(self.clip, url))
        await wait_for_playlist(self.engine.http_port, self.name, segments=1)
        gc.collect()
        gc.freeze()
        self._rss_before = psutil.Process(os.getpid()).memory_info().rss
        self.watch.start()
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
                end = time.monotonic()
                self.polls.append((start, end))
                await asyncio.sleep(POLL_INTERVAL)

    async def check(self) -> None:
        """Wait for ffmpeg to finish the clip, then assert the stream came through whole; called
        when the attack is over, which must be while the healthy stream is still live, or the
        deadline did not watch all of it."""
        assert self._pusher is not None and self._poller is not None
        assert self._pusher.returncode is None, (
            "the hostile peer outlasted the healthy stream: the attack must end before the clip does"
        )
        attack_over = time.monotonic()
        assert await asyncio.wait_for(self._pusher.wait(), 60) == 0, "the healthy ffmpeg push failed"
        margin = time.monotonic() - attack_over
        stream = self.engine.hub.get(self.name)
        assert stream is not None
        expected = self._expected
        await until(lambda: stream.stats.frames[Kind.VIDEO] >= expected["video"], 5, "the healthy stream's frames")
        self._stop.set()
        await self._poller
        grown = psutil.Process(os.getpid()).memory_info().rss - self._rss_before
        assert self.failures == [], self.failures
        assert len(self.polls) >= 10, self.polls
        await self.probe.__aexit__()
        self.watch.stop()
        slowest_poll = max(self.polls, key=lambda poll: unexplained(*poll, self.probe.stalls))
        slowest = max(b - a for a, b in self.polls)
        server = unexplained(*slowest_poll, self.probe.stalls)
        stalled = sum(b - a for a, b in self.probe.stalls)
        print(
            f"healthy playlist: {len(self.polls)} polls, slowest {slowest * 1000:.1f} ms, slowest less machine "
            f"stalls {server * 1000:.1f} ms; machine stalls {len(self.probe.stalls)}, {stalled * 1000:.0f} ms in all; "
            f"the healthy push went on {margin:.1f} s after the attack"
        )
        assert server < PLAYLIST_DEADLINE, (
            f"the healthy playlist took {slowest:.3f} s to answer, {server:.3f} s of it not a machine stall; "
            + self.watch.report(*slowest_poll)
        )
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
        await self.probe.__aexit__()
        self.watch.stop()
        gc.unfreeze()

"""`mediacore-bench soak --minutes N`: a long run under chaos, judged for leaks and stalls.

A `mediacore serve` process on loopback (temp config, free ports), P real-time ffmpeg RTMP
publishers of the generated clip, V simulated viewers (player_client, half HLS, half
LL-HLS, spread over the streams), a chaos loop that kills a random publisher now and then
and restarts it a few seconds later (one drop at a time, shorter than `[hls] end_grace`, so
the stream continues with a discontinuity), and a loop of the hostile peers of the abuse
tests (benchmarks/hostile_peers.py).

Every SAMPLE_INTERVAL seconds it records the server's RSS and open file descriptors (from
/proc), its asyncio task count (`mediacore_asyncio_tasks` from /metrics), and how many
viewers are playing. At the end it stops viewers and hostile peers, lets the server settle,
prints a table and returns non-zero when a bound below is broken.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.hostile_peers import ATTACKS, Target
from benchmarks.ingest import free_port, push_cmd
from benchmarks.live import metric_sum
from benchmarks.media import make_clip
from benchmarks.servers import start_serve, stop_process
from player_client.player import Viewer

SAMPLE_INTERVAL = 5.0
"""Seconds between samples of the server and the viewers."""
RSS_SLOPE_LIMIT_MB_PER_MIN = 2.0
"""MB per minute the server's RSS may grow over the second half of the run (least squares):
the windows are full by then, so a steady climb is a leak, not warm-up."""
TASK_SLACK = 10
"""Tasks (and file descriptors) the settled server may hold beyond its count before the
viewers and hostile peers came: timers and keep-alive stragglers, not a leak."""
SETTLE_SECONDS = 60.0
"""Seconds the server gets, after the load stops, to close connections and forget the
hostile peers' streams before tasks and descriptors are compared."""
PLAYING_WINDOW = 8.0
"""A viewer is playing if its playhead moved within this many seconds."""
RECOVERY_GRACE = 25.0
"""Seconds after a publisher comes back during which its viewers count as waiting, not
stalled: a new keyframe, a segment and the player's rejoin take that long at worst."""
DROP_EVERY = (15.0, 40.0)
"""Seconds between publisher drops (uniform), one drop at a time."""
DROP_LENGTH = (1.0, 6.0)
"""Seconds a dropped publisher stays away; below [hls] end_grace (10 s)."""
HOSTILE_PAUSE = 2.0
"""Seconds between two hostile attempts."""
ENDED_RETENTION = 15.0
"""[hls] ended_retention of the soak's server: the hostile peers' ended streams are forgotten
within the settle time, so the task count can come back to where it started."""


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss: int  # bytes
    fds: int
    tasks: int
    playing: int


@dataclass
class Bounds:
    rss_slope_mb_per_min: float = RSS_SLOPE_LIMIT_MB_PER_MIN
    task_slack: int = TASK_SLACK


@dataclass
class Report:
    minutes: float
    publishers: int
    viewers: int
    samples: list[Sample] = field(default_factory=list)
    idle_before: Sample | None = None  # publishers only, before viewers and hostile peers
    idle_after: Sample | None = None  # the same, after they stopped and the server settled
    drops: int = 0
    viewers_playing: int = 0
    viewers_waiting: int = 0
    viewers_stalled: list[str] = field(default_factory=list)
    viewer_rejoins: int = 0
    stalls: int = 0
    attempts: dict[str, Counter[str]] = field(default_factory=dict)
    ingest_errors: float = 0.0
    failures: list[str] = field(default_factory=list)


# Measuring (pure, unit-tested) ------------------------------------------------------------


def proc_rss(pid: int) -> int:
    """Resident set size of a process in bytes, from /proc/PID/status (VmRSS, in kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (units of y per unit of x); 0 for fewer than 2 points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var


def second_half(samples: list[Sample]) -> list[Sample]:
    if not samples:
        return []
    middle = samples[0].t + (samples[-1].t - samples[0].t) / 2
    return [s for s in samples if s.t >= middle]


def rss_slope_mb_per_min(samples: list[Sample]) -> float:
    return slope([(s.t / 60, s.rss / 1e6) for s in second_half(samples)])


DEFAULT_BOUNDS = Bounds()


def verdict(report: Report, bounds: Bounds = DEFAULT_BOUNDS) -> list[str]:
    """The bounds the run broke, as sentences; empty when it passed."""
    failures = []
    rss = rss_slope_mb_per_min(report.samples)
    if rss > bounds.rss_slope_mb_per_min:
        failures.append(
            f"RSS grew {rss:.2f} MB/min over the second half (bound {bounds.rss_slope_mb_per_min:g} MB/min)"
        )
    before, after = report.idle_before, report.idle_after
    if before is not None and after is not None:
        if after.tasks > before.tasks + bounds.task_slack:
            failures.append(f"tasks grew from {before.tasks} to {after.tasks} once the load stopped (task leak)")
        if after.fds > before.fds + bounds.task_slack:
            failures.append(f"open fds grew from {before.fds} to {after.fds} once the load stopped (fd leak)")
    elif report.samples:
        failures.append("the server could not be measured before and after the load")
    if report.viewers_stalled:
        failures.append(
            f"{len(report.viewers_stalled)} healthy viewers not playing at the end: {report.viewers_stalled[:5]}"
        )
    return failures


@dataclass
class DropLog:
    """When each stream's publisher was away: a viewer of a stream in a drop, or just back
    from one, is waiting, not stalled."""

    away: dict[str, float] = field(default_factory=dict)  # stream -> monotonic time it left
    back: dict[str, float] = field(default_factory=dict)  # stream -> monotonic time it returned
    count: int = 0

    def left(self, stream: str, now: float) -> None:
        self.away[stream] = now
        self.count += 1

    def returned(self, stream: str, now: float) -> None:
        self.away.pop(stream, None)
        self.back[stream] = now

    def waiting(self, stream: str, now: float, grace: float = RECOVERY_GRACE) -> bool:
        return stream in self.away or now - self.back.get(stream, -1e18) < grace


def playing(viewer: Viewer, now: float, window: float = PLAYING_WINDOW) -> bool:
    last = viewer.stats.last_playing
    return last > 0 and now - last < window


# The run -------------------------------------------------------------------------------


def serve_config(path: Path, rtmp_port: int, rtsp_port: int, http_port: int, admin_port: int) -> None:
    path.write_text(
        f"""[server]
host = "127.0.0.1"
rtmp_port = {rtmp_port}
rtsp_port = {rtsp_port}
http_port = {http_port}

[admin]
port = {admin_port}

[hls]
ended_retention = {ENDED_RETENTION}
"""
    )


class Soak:
    def __init__(self, minutes: float, publishers: int, viewers: int, metrics_url: str | None, seed: int) -> None:
        self.minutes = minutes
        self.publishers = publishers
        self.viewer_count = viewers
        self.metrics_url_arg = metrics_url
        self.rng = random.Random(seed)
        self.report = Report(minutes, publishers, viewers)
        self.drops = DropLog()
        self.pushers: dict[str, asyncio.subprocess.Process] = {}
        self.viewers: list[tuple[str, Viewer, asyncio.Task[object]]] = []
        self.stop = asyncio.Event()
        self.started = 0.0

    # Server and publishers -------------------------------------------------------------

    async def push(self, stream: str) -> None:
        self.pushers[stream] = await asyncio.create_subprocess_exec(
            *push_cmd(self.clip, f"rtmp://127.0.0.1:{self.rtmp_port}/live/{stream}"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    def tasks(self) -> int:
        text = fetch(self.metrics_url)
        return int(metric_sum(text, "mediacore_asyncio_tasks"))

    async def sample(self) -> Sample:
        tasks = await asyncio.to_thread(self.tasks)
        now = time.monotonic()
        return Sample(
            round(now - self.started, 1),
            proc_rss(self.server.pid),
            proc_fds(self.server.pid),
            tasks,
            sum(playing(v, now) for _, v, _ in self.viewers),
        )

    async def wait_live(self, streams: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            for stream in streams:
                for playlist in ("index.m3u8", "ll.m3u8"):
                    url = f"http://127.0.0.1:{self.http_port}/live/{stream}/{playlist}"
                    while True:
                        async with session.get(url) as r:
                            text = await r.text()
                            if r.status == 200 and ("#EXTINF" in text or "#EXT-X-STREAM-INF" in text):
                                break
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{url} never became live")
                        await asyncio.sleep(0.5)

    # Loops -------------------------------------------------------------------------------

    async def chaos(self) -> None:
        while not self.stop.is_set():
            if await self.pause(self.rng.uniform(*DROP_EVERY)):
                return
            stream = self.rng.choice(sorted(self.pushers))
            proc = self.pushers[stream]
            proc.kill()  # an encoder crash or a network cut: no goodbye
            await proc.wait()
            self.drops.left(stream, time.monotonic())
            await self.pause(self.rng.uniform(*DROP_LENGTH))
            await self.push(stream)
            self.drops.returned(stream, time.monotonic())

    async def hostile(self, target: Target) -> None:
        kinds = list(ATTACKS)
        while not self.stop.is_set():
            self.rng.shuffle(kinds)
            for kind in kinds:
                if self.stop.is_set():
                    return
                try:
                    outcome = await asyncio.wait_for(ATTACKS[kind](target), 60)
                except Exception as e:  # an attack that broke on our side is reported, not fatal
                    outcome = f"error: {type(e).__name__}"
                self.report.attempts.setdefault(kind, Counter())[outcome] += 1
                if await self.pause(HOSTILE_PAUSE):
                    return

    async def pause(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the run is stopping."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    def start_viewer(self, session: aiohttp.ClientSession, stream: str, low_latency: bool, seconds: float) -> None:
        self.viewers.append(self.viewer(session, stream, low_latency, seconds))

    def viewer(
        self, session: aiohttp.ClientSession, stream: str, low_latency: bool, seconds: float
    ) -> tuple[str, Viewer, asyncio.Task[object]]:
        playlist = "ll.m3u8" if low_latency else "index.m3u8"
        viewer = Viewer(f"http://127.0.0.1:{self.http_port}/live/{stream}/{playlist}", session, low_latency)
        return stream, viewer, asyncio.create_task(viewer.run(seconds))

    async def rejoin(self, session: aiohttp.ClientSession) -> None:
        """A viewer whose player gave up (an error it cannot get past) joins again, as a
        page reload would; rejoins are counted."""
        while not self.stop.is_set():
            for i, (stream, viewer, task) in enumerate(self.viewers):
                if task.done() and not self.stop.is_set():
                    left = self.end - time.monotonic()
                    if left > 5:
                        self.report.viewer_rejoins += 1
                        self.report.stalls += viewer.stats.stalls
                        self.viewers[i] = self.viewer(session, stream, viewer.prefer_ll, left)
            if await self.pause(1.0):
                return

    async def sampler(self) -> None:
        while not self.stop.is_set():
            try:
                sample = await self.sample()
                self.report.samples.append(sample)
                print(
                    f"  t={sample.t:6.0f} s  RSS {sample.rss / 1e6:6.1f} MB  tasks {sample.tasks:5d}  "
                    f"fds {sample.fds:5d}  playing {sample.playing}/{len(self.viewers)}  drops {self.drops.count}",
                    file=sys.stderr,
                )
            except OSError as e:
                print(f"  sample failed: {e}", file=sys.stderr)
            if await self.pause(SAMPLE_INTERVAL):
                return

    async def settle(self, before: Sample) -> Sample:
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            after = await self.sample()
            settled = after.tasks <= before.tasks + TASK_SLACK and after.fds <= before.fds + TASK_SLACK
            if settled or time.monotonic() > deadline:
                return after
            await asyncio.sleep(2.0)

    async def run(self) -> Report:
        self.clip = await asyncio.to_thread(make_clip, 10)
        self.rtmp_port, self.rtsp_port, self.http_port = free_port(), free_port(), free_port()
        admin_port = free_port()
        self.metrics_url = self.metrics_url_arg or f"http://127.0.0.1:{admin_port}/metrics"
        with tempfile.TemporaryDirectory(prefix="mediacore-soak-") as tmp:
            config = Path(tmp) / "soak.toml"
            serve_config(config, self.rtmp_port, self.rtsp_port, self.http_port, admin_port)
            self.server = await start_serve(config, Path(tmp) / "server.log", log_level="warning")
            try:
                await self.load()
            finally:
                for proc in self.pushers.values():
                    if proc.returncode is None:
                        proc.terminate()
                for proc in self.pushers.values():
                    await proc.wait()
                await stop_process(self.server, timeout=None)
                self.server_log_tail = (Path(tmp) / "server.log").read_text(errors="replace")[-3000:]
        self.report.failures = verdict(self.report)
        return self.report

    async def load(self) -> None:
        streams = [f"soak{i}" for i in range(self.publishers)]
        for stream in streams:
            await self.push(stream)
        await self.wait_live(streams)
        await asyncio.sleep(4)  # a few segments, as viewers joining a running show find
        self.started = time.monotonic()
        self.report.idle_before = await self.sample()
        seconds = self.minutes * 60
        self.end = time.monotonic() + seconds
        target = Target(self.rtmp_port, self.rtsp_port, self.http_port, streams[0], self.clip)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            for i in range(self.viewer_count):
                self.start_viewer(session, streams[i % len(streams)], i % 2 == 0, seconds)
                if i % 20 == 19:
                    await asyncio.sleep(0.2)  # join over a couple of seconds, not in one burst
            loops = [
                asyncio.create_task(self.sampler()),
                asyncio.create_task(self.chaos()),
                asyncio.create_task(self.hostile(target)),
                asyncio.create_task(self.rejoin(session)),
            ]
            await asyncio.sleep(max(0.0, self.end - time.monotonic() - 2))
            self.judge_viewers()  # before the viewers' deadlines: are they playing at the end?
            self.stop.set()
            await asyncio.gather(*loops, return_exceptions=True)
            for _, _, task in self.viewers:
                task.cancel()
            await asyncio.gather(*(task for _, _, task in self.viewers), return_exceptions=True)
            for _, viewer, _ in self.viewers:
                self.report.stalls += viewer.stats.stalls
        for stream in streams:  # publishers in a drop at the end come back for the settled count
            if self.pushers[stream].returncode is not None:
                await self.push(stream)
        self.report.drops = self.drops.count
        self.report.ingest_errors = metric_sum(
            await asyncio.to_thread(fetch, self.metrics_url), "mediacore_ingest_errors_total"
        )
        self.report.idle_after = await self.settle(self.report.idle_before)

    def judge_viewers(self) -> None:
        now = time.monotonic()
        for stream, viewer, task in self.viewers:
            if playing(viewer, now) and not task.done():
                self.report.viewers_playing += 1
            elif self.drops.waiting(stream, now):
                self.report.viewers_waiting += 1
            else:
                last = viewer.stats.last_playing
                idle = f"{now - last:.0f} s" if last else "never started"
                errors = viewer.stats.errors[-2:]
                self.report.viewers_stalled.append(f"{stream} {'LL' if viewer.prefer_ll else 'HLS'}: {idle} {errors}")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def table(report: Report) -> list[tuple[str, str]]:
    samples = report.samples
    rows: list[tuple[str, str]] = [("duration", f"{report.minutes:g} min")]
    if samples:
        rss = [s.rss / 1e6 for s in samples]
        rows.append(("RSS start / max / end (MB)", f"{rss[0]:.1f} / {max(rss):.1f} / {rss[-1]:.1f}"))
        rows.append(("RSS slope, second half (MB/min)", f"{rss_slope_mb_per_min(samples):+.2f}"))
        rows.append(
            (
                "tasks under load start / max / end",
                f"{samples[0].tasks} / {max(s.tasks for s in samples)} / {samples[-1].tasks}",
            )
        )
        rows.append(
            (
                "fds under load start / max / end",
                f"{samples[0].fds} / {max(s.fds for s in samples)} / {samples[-1].fds}",
            )
        )
    before, after = report.idle_before, report.idle_after
    if before and after:
        rows.append(("tasks without load before / after", f"{before.tasks} / {after.tasks}"))
        rows.append(("fds without load before / after", f"{before.fds} / {after.fds}"))
        rows.append(("RSS without load before / after (MB)", f"{before.rss / 1e6:.1f} / {after.rss / 1e6:.1f}"))
    healthy = report.viewers - report.viewers_waiting
    rows.append(("viewers playing at end / healthy", f"{report.viewers_playing} / {healthy}"))
    rows.append(("viewers waiting on a dropped publisher", str(report.viewers_waiting)))
    rows.append(("viewer rejoins / stalls", f"{report.viewer_rejoins} / {report.stalls}"))
    rows.append(("publishers / publisher drops injected", f"{report.publishers} / {report.drops}"))
    for kind, outcomes in sorted(report.attempts.items()):
        detail = ", ".join(f"{o}: {n}" for o, n in outcomes.most_common())
        rows.append((f"hostile: {kind}", f"{sum(outcomes.values())} ({detail})"))
    rows.append(("ingest errors counted by the server", f"{report.ingest_errors:g}"))
    rows.append(("verdict", "PASS" if not report.failures else "FAIL: " + "; ".join(report.failures)))
    return rows


def run(minutes: float, publishers: int, viewers: int, metrics_url: str | None, seed: int, out: Path | None) -> int:
    print(
        f"soak: {minutes:g} min, {publishers} publishers, {viewers} viewers, drops and hostile peers ...",
        file=sys.stderr,
    )
    soak = Soak(minutes, publishers, viewers, metrics_url, seed)
    report = asyncio.run(soak.run())
    for label, value in table(report):
        print(f"{label:<42} {value}")
    if report.failures:
        print("server log (tail):\n" + soak.server_log_tail, file=sys.stderr)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(report) | {"attempts": {k: dict(v) for k, v in report.attempts.items()}}
        out.write_text(json.dumps(data, indent=2))
        print(f"results written to {out}")
    return 1 if report.failures else 0

"""Shared fixtures: generated test media (cached), free ports, in-process engines, real
encoders (ffmpeg, GStreamer) and headless Chromium playing through hls.js."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from benchmarks.media import count_packets, make_clip  # noqa: F401  (re-exported for tests)
from benchmarks.servers import stop_process  # noqa: F401  (re-exported for tests)
from mediacore.app.config import Config, load_config
from mediacore.app.engine import Engine
from mediacore.model.media import Frame, Track

ROOT = Path(__file__).resolve().parent.parent

# A hypothesis deadline is a timer on each example: speed is measured by mediacore-bench, and
# a busy machine (or TEST_WORKERS=2) slows examples down, so they are judged on what they do.
settings.register_profile("mediacore", deadline=None)
settings.load_profile("mediacore")

# The test modules that start a CPU-heavy peer: headless Chromium, a live encoder, a benchmark
# suite, hundreds of simulated viewers.
HEAVY_MODULES = frozenset(
    {
        "test_bench.py",
        "test_cluster.py",
        "test_e2e_publishers.py",
        "test_e2e_rtmp_hls.py",
        "test_e2e_rtsp.py",
        "test_edge.py",
        "test_edge_outage.py",
        "test_llhls_live.py",
        "test_nginx_cache.py",
        "test_playback_tokens.py",
        "test_rtp_impairment.py",
        "test_rtp_repair.py",
        "test_rtp_rtx.py",
        "test_thumbnails.py",
        "test_watch_page.py",
        "test_watch_recovery.py",
        "test_watch_shop_e2e.py",
        "test_wheel.py",
        "test_workers.py",
    }
)
# The test modules that hold a server to a wall-clock deadline while a hostile peer runs
# (hostile.HealthyStream: every playlist poll within 0.1 s), which a heavy neighbour breaks.
DEADLINE_MODULES = frozenset(
    {
        "test_abuse_edge.py",
        "test_abuse_http.py",
        "test_abuse_rtmp.py",
        "test_abuse_rtsp.py",
        "test_abuse_timestamps.py",
        "test_admin.py",
        "test_publish_auth.py",
        "test_stall_probe.py",
    }
)
ONE_AT_A_TIME = "heavy and deadline modules"


def unit_of_work(nodeid: str) -> str:
    """The unit a test is scheduled in under `make test`'s workers: its module, so module-scoped
    fixtures and test order stay on one worker, except that the heavy and the deadline modules
    form one unit, run one module at a time, so a CPU-heavy peer never runs beside another or
    beside a deadline; the light modules run beside them: most wait on real streams, and the
    busiest (the flash-sale and chat floods) keep one or two processes busy, not a browser's
    dozens of threads or an encoder's."""
    module = nodeid.split("::", 1)[0]
    return ONE_AT_A_TIME if module.rsplit("/", 1)[-1] in HEAVY_MODULES | DEADLINE_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist schedules whole units of work (unit_of_work), the one with the most tests
    first, which is the one-at-a-time unit: it is the longest."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnitOfWork(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    return ByUnitOfWork(config, log)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def clip() -> Path:
    return make_clip()


HEALTHY_CLIP_SECONDS = 8
"""Length of the healthy stream's clip beside a hostile peer (tests/hostile.py): its first
segment is out about 2 s in, which leaves the peer about 6 s of live stream; the longest
attacks took about 3.2 s on a 2-core VM. `HealthyStream.check` fails a test whose attack
outlasts the clip."""


@pytest.fixture(scope="session")
def healthy_clip() -> Path:
    return make_clip(seconds=HEALTHY_CLIP_SECONDS)


LONG_HEALTHY_CLIP_SECONDS = 14
"""Length of the healthy stream's clip where the attack is on a victim pushing `clip` (10 s),
started once the healthy stream is out: the healthy stream outlasts the victim."""


@pytest.fixture(scope="session")
def long_healthy_clip() -> Path:
    return make_clip(seconds=LONG_HEALTHY_CLIP_SECONDS)


def local_config(server: dict[str, object] | None = None, **sections: object) -> Config:
    """A configuration listening on loopback, RTMP, RTSP and HTTP on free ports, with a data
    directory of its own (the default, ./data, would be shared by tests running side by side);
    `server` adds to (or overrides) [server], the other keyword arguments are whole sections."""
    own = {"host": "127.0.0.1", "rtmp_port": free_port(), "rtsp_port": free_port(), "http_port": free_port()}
    if "data_dir" not in (server or {}):
        own["data_dir"] = tempfile.mkdtemp(prefix="mediacore-test-data-")
    return load_config(None, {"server": {**own, **(server or {})}, **sections})


def another_node(config: Config, name: str) -> Config:
    """`config` for another node beside it (several engines in one test): its own ports and
    data directory, its own copies of the sections a test may change (plugins, auth)."""
    return dataclasses.replace(
        config,
        server=dataclasses.replace(
            config.server,
            rtmp_port=free_port(),
            rtsp_port=free_port(),
            http_port=free_port(),
            data_dir=f"{config.server.data_dir}-{name}",
        ),
        plugin_settings={},
        plugins=dataclasses.replace(config.plugins),
        auth=dataclasses.replace(config.auth),
    )


@pytest.fixture
def config(tmp_path: Path) -> Config:
    cfg = local_config({"data_dir": str(tmp_path / "data")}, admin={"port": 0})  # admin: engine.admin_port
    cfg.hls.end_grace = 3.0
    return cfg


@pytest.fixture
async def engine(config: Config) -> AsyncIterator[Engine]:

    eng = Engine(config)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


FLV_COPY = ["-c", "copy", "-f", "flv"]


def ffmpeg_push_cmd(
    clip: Path, url: str, loop: bool = False, realtime: bool = True, loops: int = 0, output: list[str] = FLV_COPY
) -> list[str]:
    """ffmpeg pushing `clip` to `url`: RTMP (FLV, streams copied) unless `output` says
    otherwise; `loop` repeats it until stopped, `loops` that many extra times."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        cmd.append("-re")
    if loop or loops:
        cmd += ["-stream_loop", "-1" if loop else str(loops)]
    return cmd + ["-i", str(clip), *output, *([url] if url else [])]


async def start_process(*cmd: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def run_harness(script: str, *args: str, timeout: float) -> Any:
    """Run the browser harness tests/e2e/`script` with node and return the JSON of the last
    line it prints (its report); fails with the end of its stderr if it printed nothing."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "e2e" / script),
        *args,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = out.decode().strip().splitlines()
    if not lines:
        raise AssertionError(f"browser harness {script} printed nothing: {err.decode()[-2000:]}")
    return json.loads(lines[-1])


async def play_in_browser(
    page_url: str, seconds: float, start_timeout: float = 40, allow_recovery: bool = False
) -> dict:
    """Play a watch page in headless Chromium with hls.js; returns play.mjs's report. A fatal
    media error the page recovered from is reported as fatal unless `allow_recovery`."""
    recovery = ["allow-recovery"] if allow_recovery else []
    args = (page_url, str(seconds), str(start_timeout), *recovery)
    return dict(await run_harness("play.mjs", *args, timeout=seconds + start_timeout + 60))


def timeline(report: dict) -> str:
    """play.mjs's readings, one line each (seconds since the first, playhead, frames decoded and
    dropped, stalls, catch-ups, hls.js latency, what hls.js was loading, buffered ranges), and
    hls.js's errors: what a failed playback check prints, to tell a server that stopped sending
    from a player that waited."""
    readings = [report["start"], *report["samples"], report["end"]] if report.get("start") else []
    first = readings[0]["wall"] if readings else 0.0
    lines = [
        f"{r['wall'] - first:6.1f} s  t={r['t']:7.2f}  frames={r['frames']:5d}  dropped={r.get('dropped', 0)}  "
        f"stalls={r['stalls']}  catch-ups={r.get('catchUps', 0)}  latency={r.get('latency')}  "
        f"loading={r.get('loading')}  buffered={r.get('buffered')}"
        for r in readings
    ]
    return "\n".join([*lines, f"errors: {report.get('errors')}"])


def playback_story(report: dict) -> str:
    """What a player saw, for a failed playback assertion: each stall after start (where the
    playhead was, the buffer ahead of it, hls.js's latency and target, how long ago media and
    a playlist last arrived and the watch page last jumped towards live, how long it lasted),
    then its timeline."""

    def num(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}"

    stalls = [
        f"stall at {num(s['at'])} s: ahead {num(s['ahead'])} s, latency {num(s['latency'])}/{num(s['target'])} s, "
        f"media {num(s['mediaAge'])} s ago, playlist {num(s['playlistAge'])} s ago, "
        f"catch-up jump {num(s['sinceCatchUp'])} s before, lasted {num(s['lasted'])} s"
        for s in report.get("stallLog", [])
    ]
    return "\n".join([*stalls, timeline(report)])


async def wait_for_playlist(http_port: int, stream: str, segments: int = 2, timeout: float = 30) -> str:
    import aiohttp

    url = f"http://127.0.0.1:{http_port}/live/{stream}/index.m3u8"
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as resp:
                if resp.status == 200:
                    text = await resp.text()
                    if text.count("#EXTINF") >= segments:
                        return text
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{url} did not list {segments} segments within {timeout} s")
            await asyncio.sleep(0.25)


async def until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds. For waiting
    on real peers and real time (a socket, ffmpeg, a live stream), never a fixed sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(interval)


async def ffprobe_frames(path: Path) -> int:
    """Video frames ffprobe decodes in `path`; fails on any error it reports."""
    proc = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        "-count_frames",
        "-select_streams",
        "v",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0 and not err.strip(), err.decode()
    return int(out.decode().split()[0].rstrip(","))  # TS lists the stream under its program too


def require_tool(name: str) -> None:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is not installed; `make test` installs it (scripts/install-system-deps.sh)")


# asyncio debug mode reports every callback that holds the loop for longer than
# slow_callback_duration; the guard below turns such reports into test failures.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
SLOW_CALLBACK_LIMIT = float(os.environ.get("MEDIACORE_SLOW_CALLBACK", "0.5"))


@pytest.fixture(autouse=True)
def _blocking_call_guard(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails a test during which a callback blocked the event loop for too long (a blocking
    call such as disk I/O or a large segment muxed on the loop instead of the mux thread)."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    slow = []
    for record in caplog.get_records("call"):
        message = record.getMessage()
        if record.name == "asyncio" and message.startswith("Executing") and " took " in message:
            seconds = float(message.rsplit(" took ", 1)[1].split()[0])
            if seconds > SLOW_CALLBACK_LIMIT:
                slow.append(message)
    assert not slow, f"event loop blocked: {slow[:3]}"


class RecordingPublisher:
    """Stands where the hub's Publisher does for an ingest core under test: records the tracks
    and frames it is given."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.frames: list[Frame] = []

    def update_track(self, track: Track) -> None:
        self.tracks.append(track)

    def send(self, frame: Frame) -> None:
        self.frames.append(frame)

    def set_metadata(self, metadata: dict[str, object]) -> None:
        pass

    def close(self) -> None:
        pass

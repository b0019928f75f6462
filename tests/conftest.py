"""Shared fixtures: generated test media (cached), free ports, in-process engines, real
encoders (ffmpeg, GStreamer) and headless Chromium playing through hls.js."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from mediacore.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
MEDIA_DIR = Path(tempfile.gettempdir()) / "mediacore-test-media"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_clip(seconds: int = 10, fps: int = 30, gop_seconds: int = 2, name: str = "clip") -> Path:
    """720p H.264 High with B-frames + AAC 48 kHz stereo, 2 s GOP, as FLV; cached."""
    MEDIA_DIR.mkdir(exist_ok=True)
    path = MEDIA_DIR / f"{name}-{seconds}s-{fps}fps-gop{gop_seconds}.flv"
    if path.exists() and path.stat().st_size > 0:
        return path
    tmp = path.with_suffix(".tmp.flv")
    gop = fps * gop_seconds
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate={fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
         "-bf", "2", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
         "-pix_fmt", "yuv420p", "-b:v", "2M", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
         "-f", "flv", str(tmp)],
        check=True,
    )
    tmp.rename(path)
    return path


def count_packets(path: Path) -> dict[str, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=codec_type,nb_read_packets",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return {s["codec_type"]: int(s["nb_read_packets"]) for s in json.loads(out)["streams"]}


@pytest.fixture(scope="session")
def clip() -> Path:
    return make_clip()


@pytest.fixture
def config() -> Config:
    cfg = load_config(None, {"server": {"host": "127.0.0.1", "rtmp_port": free_port(), "http_port": free_port()}})
    cfg.hls.end_grace = 3.0
    return cfg


@pytest.fixture
async def engine(config: Config) -> AsyncIterator["Engine"]:  # type: ignore[name-defined]
    from mediacore.engine import Engine

    eng = Engine(config)
    await eng.start()
    try:
        yield eng
    finally:
        await eng.stop()


def ffmpeg_push_cmd(clip: Path, url: str, loop: bool = False, realtime: bool = True) -> list[str]:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        cmd.append("-re")
    if loop:
        cmd += ["-stream_loop", "-1"]
    return cmd + ["-i", str(clip), "-c", "copy", "-f", "flv", url]


async def start_process(*cmd: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def play_in_browser(page_url: str, seconds: float, start_timeout: float = 40) -> dict:
    """Play a watch page in headless Chromium with hls.js; returns play.mjs's report."""
    proc = await asyncio.create_subprocess_exec(
        "node", str(ROOT / "tests" / "e2e" / "play.mjs"), page_url, str(seconds), str(start_timeout),
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), seconds + start_timeout + 60)
    lines = out.decode().strip().splitlines()
    if not lines:
        raise AssertionError(f"browser harness printed nothing: {err.decode()[-2000:]}")
    return json.loads(lines[-1])


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
    call such as disk I/O or muxing on the loop instead of a worker thread)."""
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

"""Other real publishers: GStreamer's rtmp2sink, and `mediacore demo` (what `make run` runs)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from conftest import (
    ROOT,
    free_port,
    play_in_browser,
    playback_story,
    require_tool,
    start_process,
    stop_process,
    wait_for_playlist,
)

pytestmark = pytest.mark.slow


def gstreamer_pipeline(url: str) -> list[str]:
    video = (
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 ! "
        "x264enc speed-preset=ultrafast key-int-max=60 bframes=2 bitrate=2000 ! video/x-h264,profile=high ! "
        f"h264parse ! queue ! flvmux name=mux streamable=true ! rtmp2sink location={url}"
    )
    audio = (
        "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! "
        "avenc_aac ! aacparse ! queue ! mux."
    )
    return ["gst-launch-1.0", "-q", *video.split(), *audio.split()]


async def test_gstreamer_rtmp2sink_push_plays(engine):
    require_tool("gst-launch-1.0")
    require_tool("node")
    url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/gst"
    gst = await start_process(*gstreamer_pipeline(url))
    try:
        await wait_for_playlist(engine.http_port, "gst", segments=2, timeout=40)
        report = await play_in_browser(f"http://127.0.0.1:{engine.http_port}/watch/gst?ll=0", seconds=12)
    finally:
        await stop_process(gst)
    assert report["started"], report
    assert (report["end"]["width"], report["end"]["height"]) == (1280, 720)
    assert report["advanced"] >= 10.0
    assert report["fatal"] is None, report["errors"]
    stream = engine.hub.get("gst")
    assert stream.stats.frames  # both tracks arrived
    assert {t.codec for t in stream.tracks.values()} == {"h264", "aac"}


async def test_demo_command_serves_a_stream_hlsjs_plays_hls_and_llhls(tmp_path):
    require_tool("node")
    http_port, rtmp_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediacore.app.cli",
        "demo",
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--rtmp-port",
        str(rtmp_port),
        "--rtsp-port",
        str(free_port()),
        "--admin-port",
        "0",
        cwd=str(tmp_path),  # its data directory (the shop and accounts files) lands there
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        while b"watch it at" not in line:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        watch_url = line.decode().split("watch it at", 1)[1].strip()
        assert watch_url == f"http://127.0.0.1:{http_port}/watch/demo"
        await wait_for_playlist(http_port, "demo", segments=2, timeout=40)
        report = await play_in_browser(watch_url + "?ll=0", seconds=12)
        ll_report = await play_in_browser(watch_url + "?ll=1", seconds=62)
    finally:
        await stop_process(proc)
    assert report["started"], report
    assert (report["end"]["width"], report["end"]["height"]) == (1280, 720)
    assert report["advanced"] >= 10.0
    assert report["fatal"] is None, report["errors"]
    assert report["stallsAfterStart"] == 0, playback_story(report)
    # LL-HLS from the same demo: 60 s in hls.js lowLatencyMode, no stall, no fatal error.
    assert ll_report["started"], ll_report
    assert ll_report["advanced"] >= 60.0
    assert ll_report["fatal"] is None, ll_report["errors"]
    assert ll_report["stallsAfterStart"] == 0, playback_story(ll_report)
    latencies = sorted(s["latency"] for s in ll_report["samples"][10:] if s["latency"] is not None)
    assert latencies and latencies[len(latencies) // 2] < 3.0  # low latency, far below plain HLS

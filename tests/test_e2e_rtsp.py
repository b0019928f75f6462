"""RTSP publish from the real ffmpeg, over UDP and over TCP (interleaved), into the same hub:
the HLS output plays in hls.js and every frame arrives."""

from __future__ import annotations

import asyncio

import pytest

from conftest import count_packets, make_clip, play_in_browser, require_tool, start_process, stop_process, wait_for_playlist
from mediacore.media import Kind

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_ffmpeg_rtsp_publish_plays(engine, transport):
    require_tool("ffmpeg")
    clip = make_clip()
    url = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/cam-{transport}"
    pusher = await start_process("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "1",
                                 "-i", str(clip), "-c", "copy", "-f", "rtsp", "-rtsp_transport", transport, url)
    try:
        await wait_for_playlist(engine.http_port, f"cam-{transport}", segments=2, timeout=40)
        report = await play_in_browser(f"http://127.0.0.1:{engine.http_port}/watch/cam-{transport}", seconds=10)
        assert await asyncio.wait_for(pusher.wait(), 40) == 0
    finally:
        await stop_process(pusher)
    assert report["started"] and report["fatal"] is None, report
    assert (report["end"]["width"], report["end"]["height"]) == (1280, 720)
    assert report["advanced"] >= 9.0
    stream = engine.hub.get(f"cam-{transport}")
    expected = count_packets(clip)
    # Two passes of the clip over loopback: every video frame arrives (the reorder window is
    # flushed at TEARDOWN). ffmpeg's AAC RTP packetizer aggregates frames and may end the
    # session before sending its last one, so audio may be one short.
    assert stream.stats.frames[Kind.VIDEO] == 2 * expected["video"]
    assert 2 * expected["audio"] - 2 <= stream.stats.frames[Kind.AUDIO] <= 2 * expected["audio"]

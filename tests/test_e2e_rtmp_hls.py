"""A streamer's real ffmpeg push becomes HLS that hls.js in headless Chromium plays."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest
from conftest import (
    ffmpeg_push_cmd,
    play_in_browser,
    playback_story,
    require_tool,
    start_process,
    stop_process,
    wait_for_playlist,
)
from hls_rules import PlaylistHistory

pytestmark = pytest.mark.slow


def probe_segment(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_type,width,height,sample_rate",
            "-show_entries",
            "packet=stream_index,flags",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


async def poll_playlist(url: str, history: PlaylistHistory, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
                assert "max-age" in resp.headers["Cache-Control"]
                history.add(await resp.text())
            await asyncio.sleep(0.5)


async def test_ffmpeg_push_plays_in_hlsjs(engine, clip, tmp_path):
    require_tool("ffmpeg")
    require_tool("node")
    url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop1"
    pusher = await start_process(*ffmpeg_push_cmd(clip, url, loop=True))
    history = PlaylistHistory()
    stop = asyncio.Event()
    try:
        await wait_for_playlist(engine.http_port, "shop1", segments=2)
        playlist_url = f"http://127.0.0.1:{engine.http_port}/live/shop1/index.m3u8"
        poller = asyncio.create_task(poll_playlist(playlist_url, history, stop))
        report = await play_in_browser(f"http://127.0.0.1:{engine.http_port}/watch/shop1?ll=0", seconds=22)
        stop.set()
        await poller
    finally:
        await stop_process(pusher)

    assert "exception" not in report, report.get("exception")
    assert report["started"], f"playback never started: {report}"
    assert (report["end"]["width"], report["end"]["height"]) == (1280, 720)
    assert report["advanced"] >= 20.0, f"playback advanced only {report['advanced']:.1f} s"
    assert report["fatal"] is None, report["errors"]
    assert report["stallsAfterStart"] == 0, playback_story(report)
    assert report["end"]["frames"] > 500

    # Playlist rules held on every reload, and the window slid.
    assert history.reloads >= 20
    assert history.last_media_sequence > 0, "the window never slid"
    assert history.max_segments >= 6

    # ffprobe: every segment listed now has H.264 + AAC and starts with a keyframe.
    store = engine.stores["shop1"]
    assert len(store.segments) >= 6
    for seg in store.segments:
        path = tmp_path / seg.uri
        path.write_bytes(seg.data)
        info = probe_segment(path)
        codecs = sorted((s["codec_type"], s["codec_name"]) for s in info["streams"])
        # The timed ID3 stream is declared in every segment, product cards or not.
        assert codecs == [("audio", "aac"), ("data", "timed_id3"), ("video", "h264")], (seg.uri, codecs)
        video_index = next(i for i, s in enumerate(info["streams"]) if s["codec_type"] == "video")
        first_video = next(p for p in info["packets"] if p["stream_index"] == video_index)
        assert first_video["flags"].startswith("K"), f"{seg.uri} does not start with a keyframe"
        assert seg.data[:1] == b"\x47"

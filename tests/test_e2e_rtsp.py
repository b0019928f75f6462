"""RTSP publish from real encoders into the same hub: ffmpeg over UDP and over TCP
(interleaved), ffmpeg with Opus audio (transcoded to AAC), and GStreamer's rtspclientsink.
Each output plays in hls.js for at least 20 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import (
    count_packets,
    ffmpeg_push_cmd,
    make_clip,
    play_in_browser,
    playback_story,
    require_tool,
    start_process,
    stop_process,
    wait_for_playlist,
)

from mediacore.model.media import Kind

pytestmark = pytest.mark.slow

PLAY_SECONDS = 21
LOOPS = 3  # 30 s of a 10 s clip: enough to join and play 21 s


async def push_and_play(engine, name: str, pusher_args: list[str], wait_exit: bool = True) -> dict:
    pusher = await start_process(*pusher_args)
    try:
        await wait_for_playlist(engine.http_port, name, segments=2, timeout=40)
        report = await play_in_browser(f"http://127.0.0.1:{engine.http_port}/watch/{name}?ll=0", seconds=PLAY_SECONDS)
        if wait_exit:
            assert await asyncio.wait_for(pusher.wait(), 40) == 0
    finally:
        await stop_process(pusher)
    check_playback(report)
    return report


def check_playback(report: dict) -> None:
    assert report["started"] and report["fatal"] is None, report
    assert (report["end"]["width"], report["end"]["height"]) == (1280, 720)
    assert report["advanced"] >= 20.0, report


@contextlib.contextmanager
def watch_receivers(engine, name: str) -> Iterator[dict[str, dict[str, int]]]:
    """Each track's RTP counters (received, lost, frames dropped...) of the session publishing
    `name`, as last read while the block ran (the session is gone once the pusher ends): where
    a shortfall of decoded frames came from, if it came from the ingest."""
    counters: dict[str, dict[str, int]] = {}

    async def sample() -> None:
        while True:
            counters.update({r.media.kind: r.counters() for s, r in engine.rtsp.track_receivers() if s == name})
            await asyncio.sleep(0.5)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield counters
    finally:
        task.cancel()


def ffmpeg_rtsp(clip, url: str, transport: str, audio: list[str]) -> list[str]:
    output = ["-c:v", "copy", *audio, "-f", "rtsp", "-rtsp_transport", transport]
    return ffmpeg_push_cmd(clip, url, loops=LOOPS - 1, output=output)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_ffmpeg_rtsp_publish_plays(engine, transport):
    require_tool("ffmpeg")
    clip = make_clip()
    name = f"cam-{transport}"
    url = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/{name}"
    await push_and_play(engine, name, ffmpeg_rtsp(clip, url, transport, ["-c:a", "copy"]))
    stream = engine.hub.get(name)
    expected = count_packets(clip)
    # Every video frame arrives over loopback (the reorder window is flushed at TEARDOWN).
    # ffmpeg's AAC RTP packetizer aggregates frames and may end the session before sending
    # its last one, so audio may be one short per pass.
    assert stream.stats.frames[Kind.VIDEO] == LOOPS * expected["video"]
    assert LOOPS * (expected["audio"] - 1) <= stream.stats.frames[Kind.AUDIO] <= LOOPS * expected["audio"]


async def segment_audio(engine, name: str) -> dict:
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{engine.http_port}/live/{name}/"
        async with session.get(base + "index.m3u8") as resp:
            playlist = await resp.text()
        uri = [line for line in playlist.splitlines() if line and not line.startswith("#")][-1]
        async with session.get(base + uri) as resp:
            data = await resp.read()
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", "-"], input=data, capture_output=True, check=True
    )
    return next(s for s in json.loads(probe.stdout)["streams"] if s["codec_type"] == "audio")


async def test_ffmpeg_rtsp_opus_is_transcoded_to_aac_and_plays(engine):
    require_tool("ffmpeg")
    clip = make_clip()
    name = "cam-opus"
    url = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/{name}"
    args = ffmpeg_rtsp(clip, url, "udp", ["-c:a", "libopus", "-b:a", "96k", "-ar", "48000"])
    pusher = await start_process(*args)
    try:
        await wait_for_playlist(engine.http_port, name, segments=2, timeout=40)
        audio = await segment_audio(engine, name)
        report = await play_in_browser(f"http://127.0.0.1:{engine.http_port}/watch/{name}?ll=0", seconds=PLAY_SECONDS)
        assert await asyncio.wait_for(pusher.wait(), 40) == 0
    finally:
        await stop_process(pusher)
    check_playback(report)
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 48000, 2)
    stream = engine.hub.get(name)
    assert stream.tracks[Kind.AUDIO].codec == "aac"
    # Opus 20 ms packets in, AAC 1024-sample frames out: as many as the audio lasts.
    seconds = LOOPS * count_packets(clip)["video"] / 30
    aac_frames = stream.stats.frames[Kind.AUDIO]
    assert abs(aac_frames - seconds * 48000 / 1024) <= 0.02 * seconds * 48000 / 1024, aac_frames


def gstreamer_rtsp_pipeline(url: str) -> list[str]:
    video = (
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1280,height=720,framerate=30/1 ! "
        "x264enc speed-preset=ultrafast tune=zerolatency key-int-max=60 bitrate=2000 ! video/x-h264,profile=high ! "
        "h264parse ! queue ! sink.sink_0"
    )
    audio = (
        "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 ! "
        "opusenc ! queue ! sink.sink_1"
    )
    return [
        "gst-launch-1.0",
        "-q",
        "rtspclientsink",
        "name=sink",
        f"location={url}",
        "protocols=udp",
        *video.split(),
        *audio.split(),
    ]


async def test_gstreamer_rtspclientsink_publish_plays(engine):
    require_tool("gst-launch-1.0")
    probe = subprocess.run(["gst-inspect-1.0", "rtspclientsink"], capture_output=True)
    if probe.returncode != 0:
        pytest.fail("GStreamer's rtspclientsink is missing (Debian package gstreamer1.0-rtsp)")
    name = "gst-rtsp"
    url = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/{name}"
    await push_and_play(engine, name, gstreamer_rtsp_pipeline(url), wait_exit=False)
    stream = engine.hub.get(name)
    assert {t.codec for t in stream.tracks.values()} == {"h264", "aac"}
    assert stream.stats.frames[Kind.VIDEO] >= 30 * 25


def mp4_clip(loops: int = LOOPS) -> Path:
    """make_clip's 720p30 H.264 + AAC, `loops` times over, remuxed (not re-encoded) into an
    MP4 for GStreamer's qtdemux, with Debian's ffmpeg; cached beside the clip."""
    clip = make_clip()
    path = clip.with_name(f"{clip.stem}-x{loops}.mp4")
    if not (path.exists() and path.stat().st_size > 0):
        tmp = path.with_suffix(f".{os.getpid()}.tmp.mp4")
        cmd = ffmpeg_push_cmd(clip, "", realtime=False, loops=loops - 1, output=["-c", "copy", "-y", str(tmp)])
        subprocess.run(cmd, check=True)
        tmp.rename(path)
    return path


def gstreamer_latm_pipeline(clip: Path, url: str, transport: str) -> list[str]:
    """The issue's pipeline: demuxed H.264 and AAC into rtspclientsink, which payloads the
    AAC as MP4A-LATM (rtpmp4apay, its default for audio/mpeg)."""
    return [
        "gst-launch-1.0",
        "-q",
        "filesrc",
        f"location={clip}",
        "!",
        "qtdemux",
        "name=d",
        "d.video_0",
        "!",
        "queue",
        "!",
        "h264parse",
        "!",
        "s.sink_0",
        "d.audio_0",
        "!",
        "queue",
        "!",
        "aacparse",
        "!",
        "s.sink_1",
        "rtspclientsink",
        "name=s",
        f"location={url}",
        f"protocols={transport}",
    ]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_gstreamer_rtspclientsink_h264_aac_latm_plays(engine, transport):
    """GStreamer's rtspclientsink with H.264 + AAC sends the AAC as MP4A-LATM: it publishes
    over UDP and TCP, hls.js decodes >= 95 % of the video frames of a 20 s window, and the
    segments carry the AAC stream (stereo, 48 kHz, as encoded)."""
    require_tool("gst-launch-1.0")
    require_tool("ffprobe")
    clip = mp4_clip()
    name = f"gst-latm-{transport}"
    url = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/{name}"
    pusher = await start_process(*gstreamer_latm_pipeline(clip, url, transport))
    try:
        await wait_for_playlist(engine.http_port, name, segments=2, timeout=40)
        audio = await segment_audio(engine, name)
        with watch_receivers(engine, name) as received:
            report = await play_in_browser(
                f"http://127.0.0.1:{engine.http_port}/watch/{name}?ll=0", seconds=PLAY_SECONDS
            )
    finally:
        await stop_process(pusher)
    stream = engine.hub.get(name)
    assert stream is not None
    check_playback(report)
    decoded = report["end"]["frames"] - report["start"]["frames"]
    shown = 30 * report["advanced"]
    print(f"{transport}: {decoded} frames decoded over {report['advanced']:.1f} s ({decoded / shown:.1%})")
    print(f"{transport}: RTP counters {received}")
    assert decoded >= 0.95 * shown, (decoded, shown, received, playback_story(report))
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 48000, 2)
    assert stream.tracks[Kind.AUDIO].codec == "aac"
    # Every AAC frame reached the hub: ~46.9 per second of video.
    video, aac = stream.stats.frames[Kind.VIDEO], stream.stats.frames[Kind.AUDIO]
    assert video > 30 * 20
    assert abs(aac - video / 30 * 48000 / 1024) <= 0.02 * aac + 5, (video, aac)

"""HEVC and AV1 over Enhanced RTMP from a real muxer, out through fMP4.

The clips are made by Debian's ffmpeg (libx265; libsvtav1 or libaom-av1), which cannot send
Enhanced RTMP (5.1); PyAV's bundled FFmpeg (>= 6.1) remuxes them to `rtmp://`
(benchmarks/ertmp_publish.py). Browsers play HEVC only where the platform decodes it, so
playback is checked with ffprobe/ffmpeg decoding the output end to end: `index.m3u8` (which
serves the fMP4 playlists for these codecs) and single LL-HLS parts.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

import aiohttp
import pytest
from conftest import ROOT, require_tool, until

from benchmarks.media import make_coded_clip
from mediacore.model.media import Kind
from mediacore.playlist.media import MediaPlaylist
from mediacore.playlist.multivariant import MultivariantPlaylist

pytestmark = pytest.mark.slow

SAMPLE_ENTRY = {"hevc": "hvc1", "av1": "av01"}
LOOPS = 2


async def ffprobe_json(target: str, *args: str) -> dict:
    """ffprobe's JSON for `target` (a file or a URL); fails on any error it reports."""
    proc = await asyncio.create_subprocess_exec(
        "ffprobe",
        "-v",
        "error",
        *args,
        "-of",
        "json",
        target,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0 and not err.strip(), err.decode()
    return json.loads(out)


async def decoded_video_frames(target: str) -> int:
    entries = ("-count_frames", "-select_streams", "v", "-show_entries", "stream=nb_read_frames")
    probe = await ffprobe_json(target, *entries)
    return int(probe["streams"][0]["nb_read_frames"])


def expected_codec_prefix(codec: str, probe: dict) -> str:
    """The CODECS entry's start from what ffprobe reads in the source clip (profile, level)."""
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    if codec == "hevc":
        assert video["profile"] == "Main"
        return f"hvc1.1.6.L{video['level']}."
    assert video["profile"] == "Main"
    return f"av01.0.{video['level']:02d}M.08"


@pytest.mark.parametrize("codec", ["hevc", "av1"])
async def test_enhanced_rtmp_publish_goes_out_as_fmp4(engine, codec, tmp_path):
    require_tool("ffmpeg")
    require_tool("ffprobe")
    clip = make_coded_clip(codec)
    source = await ffprobe_json(str(clip), "-show_entries", "stream=codec_type,profile,level")
    name = f"ertmp-{codec}"
    url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/{name}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.ertmp_publish",
        str(clip),
        url,
        "--loops",
        str(LOOPS),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    sent = int(out.decode().split()[-1])
    assert sent >= 100

    await until(
        lambda: name in engine.ll_renditions and all(r.ended for r in engine.ll_renditions[name].values()),
        30,
        "the LL-HLS renditions ending after the publisher left",
    )
    track = engine.hub.get(name).tracks[Kind.VIDEO]
    assert track.codec == codec
    assert (track.width, track.height) == (320, 240)
    base = f"http://127.0.0.1:{engine.http_port}/live/{name}/"
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> bytes:
            async with session.get(base + path) as resp:
                assert resp.status == 200, (path, resp.status)
                return await resp.read()

        # index.m3u8 is the fMP4 multivariant playlist for HEVC/AV1, the same as ll.m3u8.
        index = (await get("index.m3u8")).decode()
        assert index == (await get("ll.m3u8")).decode()
        variant = MultivariantPlaylist.parse(index).variants[0]
        prefix = expected_codec_prefix(codec, source)
        assert variant.codecs[0] == track.codec_string
        assert variant.codecs[0].startswith(prefix), (variant.codecs, prefix)
        if codec == "hevc":
            assert re.fullmatch(r"hvc1\.1\.6\.L\d+(\.[0-9A-F]{1,2}){1,6}", variant.codecs[0])
        else:
            assert re.fullmatch(r"av01\.0\.\d\d[MH]\.08", variant.codecs[0])
        assert variant.codecs[1] == "mp4a.40.2"
        assert variant.resolution == (320, 240)

        # A part is a decodable fMP4 fragment with the right sample entry.
        video = MediaPlaylist.parse((await get("ll/video.m3u8")).decode())
        segment = next(s for s in video.segments if s.parts)
        assert segment.map_uri, "no EXT-X-MAP"
        init = await get("ll/" + segment.map_uri)
        first_part = segment.parts[0]
        part_file = tmp_path / "part.mp4"
        part_file.write_bytes(init + await get("ll/" + first_part.uri))
        probe = await ffprobe_json(str(part_file), "-show_entries", "stream=codec_name,codec_tag_string,width,height")
        (stream,) = probe["streams"]
        assert stream["codec_tag_string"] == SAMPLE_ENTRY[codec]
        assert (stream["width"], stream["height"]) == (320, 240)
        assert await decoded_video_frames(str(part_file)) >= 1

    # End to end: ffprobe decodes the whole stream from index.m3u8 over HTTP.
    decoded = await decoded_video_frames(base + "index.m3u8")
    assert decoded >= 0.9 * sent, (decoded, sent)
    assert decoded <= sent

"""A publisher that leaves and comes back continues the same playlist after an
EXT-X-DISCONTINUITY; when it does not come back, EXT-X-ENDLIST follows the grace period."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from conftest import ffmpeg_push_cmd, make_clip, require_tool, start_process
from hls_rules import PlaylistHistory

from mediacore.playlist.media import MediaPlaylist

pytestmark = pytest.mark.slow


async def push_once(clip, url: str) -> None:
    proc = await start_process(*ffmpeg_push_cmd(clip, url))
    assert await asyncio.wait_for(proc.wait(), 60) == 0


async def test_republish_gives_discontinuity_then_endlist(engine, config, tmp_path):
    require_tool("ffmpeg")
    clip = make_clip(seconds=6, name="short")
    url = f"rtmp://127.0.0.1:{engine.rtmp_port}/live/again"
    history = PlaylistHistory()
    await push_once(clip, url)
    store = engine.stores["again"]
    history.add(store.playlist_text())
    assert not store.ended
    await push_once(clip, url)  # back within end_grace (3 s in tests)
    for _ in range(50):  # ffmpeg has exited; the last segment is muxed once the server sees the unpublish
        if store.playlist_text().count("#EXTINF") >= 6:
            break
        await asyncio.sleep(0.1)
    text = store.playlist_text()
    history.add(text)
    pl = MediaPlaylist.parse(text)
    flagged = [s for s in pl.segments if s.discontinuity]
    assert len(flagged) == 1, text
    assert pl.segments.index(flagged[0]) == 3  # 6 s of 2 s segments, then the second session
    assert abs(sum(s.duration for s in pl.segments) - 12.0) < 0.2
    for _ in range(60):  # ENDLIST after the grace period
        if store.ended:
            break
        await asyncio.sleep(0.1)
    assert store.playlist_text().endswith("#EXT-X-ENDLIST\n")
    history.add(store.playlist_text())
    # The whole presentation decodes, across the discontinuity.
    joined = tmp_path / "all.ts"
    joined.write_bytes(b"".join(s.data for s in store.segments))
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
            str(joined),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    pts = [float(x.strip(",")) for x in result.stdout.split()]
    assert len(pts) == 2 * 180  # every frame of both sessions decodes
    assert sorted(pts) == pts and len(set(pts)) == len(pts)  # one rising timeline
    assert engine.hub.get("again").ended

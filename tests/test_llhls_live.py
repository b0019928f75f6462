"""LL-HLS against a live server fed by a real ffmpeg RTMP push: every rule of the LL issue's
points 2-6 (HLS-RULES.md IDs in the test names), and hls.js in lowLatencyMode for 60 s."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp
import pytest
import pytest_asyncio
from conftest import (
    ffmpeg_push_cmd,
    local_config,
    make_clip,
    play_in_browser,
    playback_story,
    start_process,
    stop_process,
    until,
)
from hls_rules import PlaylistHistory

from mediacore.app.engine import Engine
from mediacore.model.media import Kind
from mediacore.origin.llhls import advance_part_limit
from mediacore.playlist.media import MediaPlaylist

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
RENDITIONS = ("video", "audio")


class Live:
    def __init__(self, engine: Engine, session: aiohttp.ClientSession, pusher) -> None:
        self.engine = engine
        self.session = session
        self.pusher = pusher

    def rendition(self, name: str):
        return self.engine.ll_renditions["shop"][Kind.VIDEO if name == "video" else Kind.AUDIO]

    async def get(self, path: str, **kw) -> tuple[int, dict, bytes, float]:
        start = time.monotonic()
        async with self.session.get(path, **kw) as r:
            body = await r.read()
            return r.status, dict(r.headers), body, time.monotonic() - start

    async def playlist(self, name: str, query: str = "") -> tuple[str, dict, float]:
        status, headers, body, elapsed = await self.get(f"/live/shop/ll/{name}.m3u8{query}")
        assert status == 200, body
        return body.decode(), headers, elapsed


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live():
    config = local_config(admin={"port": 0})
    config.hls.end_grace = 8.0
    engine = Engine(config)
    await engine.start()
    pusher = await start_process(
        *ffmpeg_push_cmd(make_clip(), f"rtmp://127.0.0.1:{engine.rtmp_port}/live/shop", loop=True)
    )
    session = aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}")
    try:
        for _ in range(200):
            renditions = engine.ll_renditions.get("shop")
            if renditions and all(r.ready and len(r.segments) >= 3 for r in renditions.values()):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("LL-HLS renditions never became ready")
        yield Live(engine, session, pusher)
    finally:
        await session.close()
        await stop_process(pusher)
        await engine.stop()


async def test_static_rules_L3_L5_L6_L7_C1_C2_C4_H2_R1_P5(live):
    for name in RENDITIONS:
        text, headers, _ = await live.playlist(name)
        pl = MediaPlaylist.parse(text)
        assert pl.version == 6  # EXT-X-MAP needs 6; nothing needs more (P5)
        sc = pl.server_control
        assert sc is not None and pl.part_target is not None
        assert sc.can_block_reload  # C1
        assert sc.part_hold_back is not None and sc.part_hold_back >= 3 * pl.part_target  # C2 (Apple MUST)
        assert sc.can_skip_until is not None and sc.can_skip_until >= 6 * pl.target_duration  # C4
        assert sc.can_skip_dateranges
        assert pl.part_target == pytest.approx(0.22)  # L3: declared above the 0.2 s nominal
        assert pl.preload_hint is not None  # H2 (TYPE=PART)
        assert [r.uri for r in pl.rendition_reports] == [("audio" if name == "video" else "video") + ".m3u8"]  # R1
        with_parts = [s for s in pl.segments if s.parts]
        assert with_parts and with_parts[-1] is pl.segments[-1]
        # Parts are listed for about the last 3 x TD only (G1).
        listed = sum(s.duration or sum(p.duration for p in s.parts) for s in with_parts)
        assert listed <= 3 * pl.target_duration + 2 * pl.target_duration
        for seg in with_parts:
            # L6: parse() refuses a DISCONTINUITY, MAP or PDT after a parent's parts.
            assert seg.program_date_time is not None
            for i, part in enumerate(seg.parts):
                assert part.duration <= pl.part_target + 1e-6, part  # L5
                last_of_parent = seg.uri is not None and i == len(seg.parts) - 1
                if not (part.independent or last_of_parent):
                    assert part.duration >= 0.85 * pl.part_target, part  # L5
            if name == "video":
                assert seg.parts[0].independent  # every parent starts with an IDR part
            if seg.uri is not None:
                assert sum(p.duration for p in seg.parts) == pytest.approx(seg.duration, abs=1e-4)  # L7
        # The hint names the part after the last listed one.
        last = pl.segments[-1]
        msn = last.msn + 1 if last.uri else last.msn
        index = 0 if last.uri else len(last.parts)
        assert pl.preload_hint.endswith(f"-{msn}.{index}.m4s")


def ffprobe_count(path, independent: bool = True) -> int:
    """Frames decoded (or, for a part that needs earlier frames, packets parsed)."""
    entry, count, level = (
        ("nb_read_frames", "-count_frames", "error") if independent else ("nb_read_packets", "-count_packets", "fatal")
    )  # probing decodes a few frames
    result = subprocess.run(
        ["ffprobe", "-v", level, count, "-show_entries", f"stream={entry}", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    return int(result.stdout.strip().rstrip(","))


async def test_parent_bytes_are_its_parts_and_everything_decodes_E6_L1_L7(live, tmp_path):
    """ffprobe: init + every listed part, and init + every listed parent segment."""
    for name in RENDITIONS:
        pl = MediaPlaylist.parse((await live.playlist(name))[0])
        inits: dict[str, bytes] = {}
        for seg in pl.segments:
            if seg.map_uri not in inits:
                status, _, init, _ = await live.get(f"/live/shop/ll/{seg.map_uri}")
                assert status == 200 and init[4:8] == b"ftyp"
                inits[seg.map_uri] = init
            init = inits[seg.map_uri]
            parts = []
            for part in seg.parts:
                status, headers, data, _ = await live.get(f"/live/shop/ll/{part.uri}")
                assert status == 200 and headers["Content-Type"] == ("video/mp4" if name == "video" else "audio/mp4")
                parts.append(data)
                path = tmp_path / f"{name}-part.mp4"
                path.write_bytes(init + data)
                assert ffprobe_count(path, part.independent) >= 1
            if seg.uri is None:
                continue
            status, _, whole, _ = await live.get(f"/live/shop/ll/{seg.uri}")
            assert status == 200
            if seg.parts:
                assert whole == b"".join(parts)  # L7: the parent is its parts, byte for byte
            path = tmp_path / f"{name}-segment.mp4"
            path.write_bytes(init + whole)
            frames = ffprobe_count(path)
            expected = round(seg.duration * (30 if name == "video" else 48000 / 1024))
            assert abs(frames - expected) <= 1, (seg.uri, frames, expected)
            if name == "video":
                first = subprocess.run(
                    [
                        "ffprobe",
                        "-v",
                        "error",
                        "-select_streams",
                        "v",
                        "-show_entries",
                        "frame=key_frame",
                        "-read_intervals",
                        "%+#1",
                        "-of",
                        "csv=p=0",
                        str(path),
                    ],
                    capture_output=True,
                    text=True,
                )
                assert first.stdout.strip().split("\n")[0].startswith("1")  # starts with an IDR (L8)


async def test_blocking_reload_B1_B2_B3_B4_B6_B7_B11(live):
    video = live.rendition("video")
    td = video.target_duration
    # B2: the next part: the response waits for it, then lists it.
    msn, index = video.next_part()
    text, headers, elapsed = await live.playlist("video", f"?_HLS_msn={msn}&_HLS_part={index}")
    assert f"-{msn}.{index}.m4s" in text.split("#EXT-X-PRELOAD-HINT")[0]
    assert elapsed < 3 * video.part_target + 0.5
    assert headers["Cache-Control"] == f"public, max-age={6 * td}"
    # B11: parameter order does not matter.
    a, _, _ = await live.playlist("video", f"?_HLS_msn={msn}&_HLS_part={index}")
    b, _, _ = await live.playlist("video", f"?_HLS_part={index}&_HLS_msn={msn}")
    assert a == b or MediaPlaylist.parse(a).segments[-1].msn <= MediaPlaylist.parse(b).segments[-1].msn
    # B1: a whole segment: answered once segment msn is complete.
    msn, _ = video.next_part()
    text, _, _ = await live.playlist("video", f"?_HLS_msn={msn}")
    assert any(s.msn >= msn for s in MediaPlaylist.parse(text).complete_segments)
    # B3: a part index past a complete parent's last part means part 0 of the next parent.
    done = video.segments[-1].msn
    text, _, _ = await live.playlist("video", f"?_HLS_msn={done}&_HLS_part=99")
    assert f"-{done + 1}.0.m4s" in text.split("#EXT-X-PRELOAD-HINT")[0]
    # B4: an old MSN gets the whole current playlist at once.
    text, _, elapsed = await live.playlist("video", "?_HLS_msn=0&_HLS_part=0")
    assert elapsed < 0.5 and MediaPlaylist.parse(text).preload_hint is not None
    # B6, B7: 400.
    status, headers, _, _ = await live.get("/live/shop/ll/video.m3u8?_HLS_part=1")
    assert status == 400
    last_msn, last_part = video.last_part()
    status, _, _, _ = await live.get(f"/live/shop/ll/video.m3u8?_HLS_msn={last_msn + 3}")
    assert status == 400
    limit = advance_part_limit(video.part_target)
    status, _, _, elapsed = await live.get(
        f"/live/shop/ll/video.m3u8?_HLS_msn={last_msn}&_HLS_part={last_part + limit + 2}"
    )
    assert status == 400 and elapsed < 0.5
    status, _, _, _ = await live.get("/live/shop/ll/video.m3u8?_HLS_msn=abc")
    assert status == 400
    # Non-blocking playlists are short-lived; all are gzipped when asked and carry CORS.
    async with live.session.get("/live/shop/ll/video.m3u8", headers={"Accept-Encoding": "gzip"}) as r:
        assert r.headers["Cache-Control"] == "public, max-age=1"
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")


async def test_preload_hint_blocks_then_sends_whole_part_H5_H6_H7(live):
    for name in RENDITIONS:
        pl = MediaPlaylist.parse((await live.playlist(name))[0])
        hinted = pl.preload_hint
        status, _, data, elapsed = await live.get(f"/live/shop/ll/{hinted}")
        assert status == 200 and data[4:8] == b"moof"
        assert elapsed < 3 * pl.part_target + 0.5
        rendition = live.rendition(name)
        assert rendition.resource(hinted, time.monotonic()) == data  # the whole part, as stored
        # A name beyond the hint is not requestable (H7).
        base, _, tail = hinted.rpartition("-")
        msn, index = tail.removesuffix(".m4s").split(".")
        status, _, _, elapsed = await live.get(f"/live/shop/ll/{base}-{msn}.{int(index) + 5}.m4s")
        assert status == 404 and elapsed < 0.5
        status, _, _, _ = await live.get(f"/live/shop/ll/{base}-{int(msn) + 50}.m4s")
        assert status == 404


def segment_blocks(text: str) -> tuple[list[str], dict[int, list[str]], list[str]]:
    """Split a playlist into (header lines, {msn: the segment's lines}, trailing lines)."""
    pl = MediaPlaylist.parse(text)
    lines = text.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith(("#EXT-X-MAP", "#EXT-X-PROGRAM-DATE-TIME")))
    header, body = lines[:first], lines[first:]
    blocks: dict[int, list[str]] = {}
    msn = pl.media_sequence + pl.skipped_segments
    current: list[str] = []
    for line in body:
        current.append(line)
        if line and not line.startswith("#"):
            blocks[msn] = current
            msn, current = msn + 1, []
    return header, blocks, current


def merge_delta(previous: str, delta: str) -> str:
    """Apply a delta update to the previous full playlist the way a client does (S6.3.7):
    EXT-X-SKIP stands for the segments the client already has, which it takes from there."""
    _, old_blocks, _ = segment_blocks(previous)
    header, new_blocks, trailer = segment_blocks(delta)
    d = MediaPlaylist.parse(delta)
    header = [
        "#EXT-X-VERSION:6" if ln.startswith("#EXT-X-VERSION") else ln
        for ln in header
        if not ln.startswith("#EXT-X-SKIP")
    ]
    merged = []
    for msn in range(d.media_sequence, d.media_sequence + d.skipped_segments):
        merged += [ln for ln in old_blocks[msn] if not ln.startswith("#EXT-X-MAP")]
    first_new = d.media_sequence + d.skipped_segments
    map_lines = [ln for ln in new_blocks[first_new] if ln.startswith("#EXT-X-MAP")]
    rest = [ln for msn in sorted(new_blocks) for ln in new_blocks[msn] if not (msn == first_new and ln in map_lines)]
    return "\n".join(header + map_lines + merged + rest + trailer) + "\n"


async def test_delta_updates_merge_to_the_full_playlist_K1_K7(live):
    video = live.rendition("video")
    for _ in range(300):  # a young stream has nothing old enough to skip yet
        if sum(s.duration for s in video.segments) > video.skip_boundary() + video.target_duration:
            break
        await asyncio.sleep(0.1)
    previous = video.render()
    start = video.last_complete_msn()
    # The playlist moves on by two segments (the skip boundary with it).
    await until(lambda: video.last_complete_msn() >= start + 2, 8 * video.target_duration, "two more segments")
    full, delta, delta_v2 = video.render(), video.render("YES"), video.render("v2")  # one instant
    d = MediaPlaylist.parse(delta)
    assert d.skipped_segments > 0 and d.version == 9  # K2, K7
    assert d.media_sequence == MediaPlaylist.parse(full).media_sequence  # K3
    assert merge_delta(previous, delta) == full  # K1-K4
    d2 = MediaPlaylist.parse(delta_v2)
    assert d2.version == 10 and d2.recently_removed_dateranges == ""  # K5, K7
    # Over HTTP too, and a delta request is still a full answer to blocking semantics.
    text, _, _ = await live.playlist("video", "?_HLS_skip=YES")
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in text and "#EXT-X-VERSION:9" in text


async def test_rendition_reports_are_current_R2_R3(live):
    for name, other in (("video", "audio"), ("audio", "video")):
        text = live.rendition(name).render()
        (report,) = MediaPlaylist.parse(text).rendition_reports
        assert (report.last_msn, report.last_part) == live.rendition(other).last_part()
        assert report.uri == f"{other}.m3u8"  # relative to the containing playlist


async def test_multivariant_playlist(live):
    status, headers, body, _ = await live.get("/live/shop/ll.m3u8")
    text = body.decode()
    assert status == 200 and text.startswith("#EXTM3U\n")
    assert '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac"' in text and 'URI="ll/audio.m3u8"' in text
    inf = next(ln for ln in text.splitlines() if ln.startswith("#EXT-X-STREAM-INF:"))
    for attribute in (
        "BANDWIDTH=",
        "AVERAGE-BANDWIDTH=",
        'CODECS="avc1.64001f,mp4a.40.2"',
        "RESOLUTION=1280x720",
        "FRAME-RATE=30.000",
        'AUDIO="aac"',
    ):
        assert attribute in inf, inf
    assert text.splitlines()[-1] == "ll/video.m3u8"


async def test_hlsjs_low_latency_plays_60s_while_playlists_stay_stable_M2_M4_B12(live):
    history = {name: PlaylistHistory() for name in RENDITIONS}
    stop = asyncio.Event()
    gaps: list[float] = []

    async def poll() -> None:
        while not stop.is_set():
            for name in RENDITIONS:
                text, _, _ = await live.playlist(name)
                history[name].add(text)
            await asyncio.sleep(0.5)

    async def follow_parts() -> None:
        # Blocking requests for each next part: new parts arrive about every PART-TARGET (B12).
        video = live.rendition("video")
        last = time.monotonic()
        while not stop.is_set():
            msn, index = video.next_part()
            await live.playlist("video", f"?_HLS_msn={msn}&_HLS_part={index}")
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tasks = [asyncio.create_task(poll()), asyncio.create_task(follow_parts())]
    url = f"http://127.0.0.1:{live.engine.http_port}/watch/shop?ll=1"
    report = await play_in_browser(url, seconds=62)
    stop.set()
    await asyncio.gather(*tasks)
    assert report["started"], report
    assert report["advanced"] >= 60.0, report["advanced"]
    assert report["fatal"] is None, report["errors"]
    assert report["stallsAfterStart"] == 0, playback_story(report)
    assert (report["end"]["width"], report["end"]["height"]) == (1280, 720)
    for name in RENDITIONS:
        assert history[name].reloads >= 50
        assert history[name].last_media_sequence > 0  # the window slid during the run
    gaps.sort()
    assert gaps[len(gaps) // 2] < 0.3  # the median part interval is about one part (0.2 s)


async def test_stalled_publisher_503_then_endlist_ignores_directives_B5_B8_H3(live):
    await stop_process(live.pusher)
    video = live.rendition("video")
    msn, index = video.next_part()
    status, headers, _, elapsed = await live.get(f"/live/shop/ll/video.m3u8?_HLS_msn={msn}&_HLS_part={index + 1}")
    assert status == 503 and elapsed >= 3 * video.target_duration - 0.5  # B8
    for _ in range(150):
        if video.ended:
            break
        await asyncio.sleep(0.1)
    assert video.ended
    text, _, elapsed = await live.playlist("video", f"?_HLS_msn={msn + 2}&_HLS_part=0")
    assert elapsed < 0.5  # B5: directives ignored
    pl = MediaPlaylist.parse(text)
    assert pl.ended and pl.preload_hint is None  # H3: no preload hint with ENDLIST

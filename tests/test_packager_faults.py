"""A packager that raises: restarted on the same playlist after EXT-X-DISCONTINUITY, within
[hls] max_packager_restarts per packager_restart_window; past that the stream is failed
(API, /healthz, ENDLIST, publisher disconnected). The pure parts first, then a real ffmpeg
push with faults injected into one stream's packagers beside a healthy stream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from conftest import (
    ffmpeg_push_cmd,
    ffprobe_frames,
    require_tool,
    start_process,
    stop_process,
    until,
    wait_for_playlist,
)

from mediacore.app.engine import Engine
from mediacore.app.supervision import RestartBudget
from mediacore.model.media import Frame, Kind
from mediacore.packager.hls import HlsPackager
from mediacore.packager.llhls import LlHlsPackager
from mediacore.playlist.media import MediaPlaylist
from mediacore.store.hls import HlsStore
from mediacore.store.ll import LlRendition


def test_restart_budget_counts_restarts_within_the_window() -> None:
    budget = RestartBudget(limit=3, window=60.0)
    assert [budget.allow("a", "hls", t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert budget.restarts("a", "hls") == 3
    assert not budget.allow("a", "hls", 3.0)  # a fourth error within 60 s: the stream fails
    assert budget.allow("a", "llhls", 3.0) and budget.allow("b", "hls", 3.0)  # counted per stream and output
    assert budget.allow("a", "hls", 60.5)  # the restart at 0 s has left the window
    budget.forget("a")
    assert budget.restarts("a", "hls") == 0 and budget.restarts("b", "hls") == 1
    assert not RestartBudget(limit=0, window=60.0).allow("a", "hls", 0.0)


def test_hls_store_breaks_the_timeline_at_the_next_segment() -> None:
    store = HlsStore(6, 2.0)
    store.add_segment(2.0, b"a", 1000.0, False, 0.0)
    store.break_timeline()
    store.add_segment(2.0, b"b", 1010.0, False, 1.0)
    store.add_segment(2.0, b"c", 1012.0, False, 2.0)
    assert [s.discontinuity for s in store.segments] == [False, True, False]
    pl = MediaPlaylist.parse(store.playlist_text())
    assert [s.discontinuity for s in pl.segments] == [False, True, False] and pl.media_sequence == 0


async def test_ll_rendition_breaks_the_timeline_and_wakes_blocked_requests() -> None:
    r = LlRendition("video", "v", 20, 0.22, 2.0)
    r.set_init(b"init-1")
    for i in range(10):  # one complete parent
        r.add_part(b"p", 0.2, i == 0, i == 0, i == 9, 1000.0 + i * 0.2, now=1.0, samples=6)
    for i in range(3):  # a parent in progress when the packager fails
        r.add_part(b"q", 0.2, i == 0, i == 0, False, 1002.0 + i * 0.2, now=2.0, samples=6)
    assert r.next_part() == (1, 3)  # the preload hint names part 3 of MSN 1
    waiter = asyncio.ensure_future(r.changed.wait(5.0))
    await asyncio.sleep(0)
    r.break_timeline(now=3.0)
    assert await waiter  # blocked requests wake
    assert r.current is None and r.last_complete_msn() == 1 and r.next_part() == (2, 0)
    # A playlist request blocked on the abandoned part waits for part 0 of MSN 2 (B3) ...
    assert not r.has(1, 3) and not r.has(2, 0)
    assert r.resource(r.part_uri(1, 3), now=3.0) is None  # and the part itself is 404 (H7)
    r.set_init(b"init-2")  # the restarted packager writes its init
    r.add_part(b"r", 0.2, True, True, False, 1010.0, now=4.0, samples=6)
    assert r.has(1, 3)  # ... which the restarted packager's first part satisfies
    pl = MediaPlaylist.parse(r.render())
    assert [(s.msn, s.discontinuity) for s in pl.segments] == [(0, False), (1, False), (2, True)]
    assert abs(pl.segments[1].duration - 0.6) < 1e-3  # ended with the parts it had
    assert pl.segments[2].map_uri != pl.segments[1].map_uri and len(pl.segments[2].parts) == 1
    assert pl.preload_hint == r.part_uri(2, 1)


# A real ffmpeg push, faults injected ------------------------------------------------------


class Faults:
    """Makes the packagers of stream `name` raise: `when(packager)` says whether the frame
    about to be packaged fails, at most `limit` times per output."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, limit: int, when: Callable[[object], bool]) -> None:
        self.raised = {"hls": 0, "llhls": 0}
        self.limit = limit
        self.enabled = True
        hls_on_frame, ll_on_frame = HlsPackager._on_frame, LlHlsPackager._on_frame

        def due(output: str, packager: HlsPackager | LlHlsPackager) -> bool:
            if self.enabled and packager.stream.name == name and self.raised[output] < limit and when(packager):
                self.raised[output] += 1
                return True
            return False

        async def hls(packager: HlsPackager, frame: Frame) -> None:
            if due("hls", packager):
                raise RuntimeError("injected HLS packager fault")
            await hls_on_frame(packager, frame)

        def llhls(packager: LlHlsPackager, frame: Frame) -> None:
            if due("llhls", packager):
                raise RuntimeError("injected LL-HLS packager fault")
            ll_on_frame(packager, frame)

        monkeypatch.setattr(HlsPackager, "_on_frame", hls)
        monkeypatch.setattr(LlHlsPackager, "_on_frame", llhls)


def after_segments(n: int) -> Callable[[object], bool]:
    """Due once the packager's playlist (HLS, or LL-HLS video) has `n` segments."""

    def when(packager: object) -> bool:
        if isinstance(packager, HlsPackager):
            return packager.store.next_msn >= n
        assert isinstance(packager, LlHlsPackager)
        return packager.renditions[Kind.VIDEO].next_msn >= n

    return when


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_packager_that_raises_is_restarted_and_the_playlists_go_on(
    engine: Engine, clip: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    require_tool("ffmpeg")
    faults = Faults(monkeypatch, "bad", limit=1, when=after_segments(2))
    base = f"rtmp://127.0.0.1:{engine.rtmp_port}/live"
    pushes = [await start_process(*ffmpeg_push_cmd(clip, f"{base}/{n}", loop=True)) for n in ("bad", "good")]
    try:
        await until(lambda: faults.raised == {"hls": 1, "llhls": 1}, 40, "one fault in each packager of bad")
        store, good = engine.stores["bad"], engine.stores["good"]
        video = engine.ll_renditions["bad"][Kind.VIDEO]
        audio = engine.ll_renditions["bad"][Kind.AUDIO]
        msn = store.next_msn
        await until(lambda: store.next_msn >= msn + 2, 20, "bad's HLS playlist advancing after the restart")
        await until(
            lambda: sum(1 for s in video.segments if s.discontinuity) == 1 and not video.segments[-1].discontinuity,
            20,
            "bad's LL-HLS video playlist advancing after the restart",
        )
        # HLS: one EXT-X-DISCONTINUITY where the restarted packager began; that media decodes.
        text = store.playlist_text()
        assert text.count("#EXT-X-DISCONTINUITY\n") == 1 and "#EXT-X-ENDLIST" not in text, text
        resumed = next(s for s in store.segments if s.discontinuity)
        (tmp_path / "resumed.ts").write_bytes(resumed.data)
        assert await ffprobe_frames(tmp_path / "resumed.ts") >= 30
        # LL-HLS: both renditions flag the new timeline; the new init + the parent decode.
        for rendition in (video, audio):
            assert "#EXT-X-DISCONTINUITY\n" in rendition.render() and "#EXT-X-PRELOAD-HINT" in rendition.render()
        parent = next(s for s in video.segments if s.discontinuity)
        assert parent.parts[0].independent and parent.init_uri != video.segments[0].init_uri
        (tmp_path / "resumed.mp4").write_bytes(video.inits[parent.init_uri] + parent.data())
        assert await ffprobe_frames(tmp_path / "resumed.mp4") >= 30
        # The restarted packager began at a video keyframe: the audio parents start with the
        # video ones again (I3) rather than a GOP ahead of them.
        await until(lambda: any(s.discontinuity for s in audio.segments), 10, "audio's new timeline")
        audio_parent = next(s for s in audio.segments if s.discontinuity)
        assert abs(audio_parent.program_date_time - parent.program_date_time) < 0.1  # a frame or two: interleaving
        # The neighbour never noticed; the API still says live; the faults are counted.
        assert not any(s.discontinuity for s in good.segments) and not good.ended
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as session:
            async with session.get("/api/streams") as r:
                states = {s["name"]: (s["state"], s["failure"]) for s in await r.json()}
            assert states == {"bad": ("live", None), "good": ("live", None)}
            async with session.get(f"http://127.0.0.1:{engine.admin_port}/metrics") as r:
                text = await r.text()
        assert metric(text, 'mediacore_packager_errors_total{output="hls"}') == 1
        assert metric(text, 'mediacore_packager_errors_total{output="llhls"}') == 1
    finally:
        for push in pushes:
            await stop_process(push)


async def test_repeated_faults_fail_the_stream_and_a_later_publish_starts_fresh(
    engine: Engine, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("ffmpeg")
    limit = engine.config.hls.max_packager_restarts
    faults = Faults(monkeypatch, "bad", limit=limit + 1, when=lambda p: isinstance(p, HlsPackager) and p.store.ready)
    engine.lifecycle.ended_retention = 2.0  # forget the failed stream soon
    base = f"rtmp://127.0.0.1:{engine.rtmp_port}/live"
    bad = await start_process(*ffmpeg_push_cmd(clip, f"{base}/bad", loop=True))
    good = await start_process(*ffmpeg_push_cmd(clip, f"{base}/good", loop=True))
    http = aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}")
    try:
        await until(lambda: "bad" in engine.failed, 40, "bad marked failed")
        assert faults.raised == {"hls": limit + 1, "llhls": 0}
        # The publisher is disconnected: ffmpeg sees the failure and exits.
        await asyncio.wait_for(bad.wait(), 10)
        async with http.get("/api/streams") as r:
            states = {s["name"]: s for s in await r.json()}
        assert states["bad"]["state"] == "failed" and states["good"]["state"] == "live"
        assert f"hls packager failed {limit + 1} times" in states["bad"]["failure"]
        async with http.get("/healthz") as r:
            assert r.status == 200  # one failed stream must not take the node out of a balancer
            assert await r.json() == {"status": "degraded", "live_streams": 1, "failed_streams": ["bad"]}
        async with http.get(f"http://127.0.0.1:{engine.admin_port}/metrics") as r:
            text = await r.text()
        assert metric(text, 'mediacore_streams{state="failed"}') == 1
        assert metric(text, 'mediacore_packager_errors_total{output="hls"}') == limit + 1
        # Every playlist of the failed stream has ended; the LL-HLS ones after their last media.
        for path in ("index.m3u8", "ll/video.m3u8", "ll/audio.m3u8"):
            async with http.get(f"/live/bad/{path}") as r:
                assert r.status == 200, path
                body = await r.text()
            assert "\n#EXT-X-ENDLIST\n" in body and "#EXT-X-PRELOAD-HINT" not in body, (path, body)
        # The stream beside it goes on.
        msn = engine.stores["good"].next_msn
        await until(lambda: engine.stores["good"].next_msn > msn, 10, "good advancing")
        assert not engine.stores["good"].ended and "good" not in engine.failed
        # Forgotten after the retention; a later publish starts a fresh playlist.
        await until(lambda: engine.hub.get("bad") is None, 10, "bad forgotten")
        async with http.get("/healthz") as r:
            assert (await r.json())["status"] == "ok"
        faults.enabled = False
        again = await start_process(*ffmpeg_push_cmd(clip, f"{base}/bad", loop=True))
        try:
            await wait_for_playlist(engine.http_port, "bad", segments=2)
            store = engine.stores["bad"]
            assert store.segments[0].msn == 0 and not store.ended and "bad" not in engine.failed
            async with http.get("/api/streams") as r:
                assert {s["name"]: s["state"] for s in await r.json()}["bad"] == "live"
        finally:
            await stop_process(again)
    finally:
        await http.close()
        for push in (bad, good):
            await stop_process(push)

"""Hostile timestamps: jumps, no keyframes, frozen clocks.

Finding 1: one RTMP frame far from the last (keyframe @0 ms, P @33 ms, keyframe @0x7FFFFFF0
ms) made the LL-HLS part cutter fill the hole with about 10.7 million GAP parts on the event
loop (every stream froze), and the HLS segmenter close a segment of 24 days. A jump beyond
max(10 s, 3 x TARGETDURATION) in a track is a new timeline now (EXT-X-DISCONTINUITY), GAP
parts fill at most one segment duration, and no segment outlasts 3 x TARGETDURATION.

Finding 2: a publisher that never sends a keyframe, or freezes its timestamps, grew one open
segment and one LL-HLS parent without limit. Both are cut at 3 x TARGETDURATION or at
`max_segment_bytes` now, logged once, video resumes at the next keyframe, and the window of
a playlist whose segments are all but empty stays bounded.

The fast tests drive TimelineGuard, PartCutter, Segmenter and the store directly; the slow
ones (ffmpeg) publish the hostile stream over RTMP beside tests/hostile.py's HealthyStream.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from conftest import until
from hostile import HealthyStream

from benchmarks.hostile_peers import HostilePublisher
from mediacore.app.engine import Engine
from mediacore.model.decode_order import DecodeOrder
from mediacore.model.media import Frame, Kind, Track
from mediacore.model.timebase import round_half_up
from mediacore.packager.parts import ClosedPart, PartCutter, declared_part_target
from mediacore.packager.segmenter import SegmentDraft, Segmenter
from mediacore.playlist.media import MediaPlaylist
from mediacore.store.hls import HlsStore

VIDEO = Track(Kind.VIDEO, "h264", 90000, b"")
AUDIO = Track(Kind.AUDIO, "aac", 48000, b"")
ISSUE_JUMP_MS = 0x7FFFFFF0  # the frame of the report: 24.8 days after the one before
LONG_JUMP_MS = 23_760_000  # 6.6 h: 118,800 GAP parts made in one go before the fix
JUMPS = pytest.mark.parametrize("jump_ms", [LONG_JUMP_MS, ISSUE_JUMP_MS], ids=["6.6h", "0x7FFFFFF0ms"])
TD = 2  # TARGETDURATION of every stream here (2 s segments)
LONGEST = 3 * TD  # a segment or parent no keyframe closes is cut here
LOOP_STALL_LIMIT = 0.25
"""Seconds the event loop may keep a timer waiting while a hostile peer runs: well above a
loaded machine's jitter, well below the 1 s and more that a 6.6 h jump froze it for."""


def video(ms: int, key: bool = False, size: int = 100) -> Frame:
    return Frame(VIDEO, ms * 90, ms * 90, key, b"v" * size, 1000.0 + ms / 1000)


def audio(i: int, size: int = 10) -> Frame:
    return Frame(AUDIO, i * 1024, i * 1024, True, b"a" * size, 1000.0 + i * 1024 / 48000)


def frame_ms(i: int) -> int:
    return round(i * 1000 / 30)


def parents_of(parts: list[ClosedPart]) -> list[list[ClosedPart]]:
    parents: list[list[ClosedPart]] = [[]]
    for part in parts:
        parents[-1].append(part)
        if part.ends_parent:
            parents.append([])
    return [p for p in parents if p]


def seconds(parent: list[ClosedPart]) -> float:
    return sum(p.duration for p in parent) / 90000


# Finding 1: timestamp jumps -----------------------------------------------------------


def test_a_jump_either_way_beyond_the_limit_starts_a_new_timeline():
    from mediacore.packager.timeline import TimelineGuard, jump_limit

    assert jump_limit(10.0, 2) == 10.0 and jump_limit(10.0, 6) == 18.0  # max(10 s, 3 x TD)
    guard = TimelineGuard()
    limit = jump_limit(10.0, TD)
    assert not guard.jumped(video(0, True), limit)
    assert not guard.jumped(video(9_900), limit)  # a long outage, but within the limit
    assert not guard.jumped(audio(0), limit)
    assert guard.jumped(video(ISSUE_JUMP_MS, True), limit) and guard.last_jump == pytest.approx(2147473.732)
    # The other track follows the jump a frame later: the same new timeline, not a second jump.
    assert not guard.jumped(Frame(AUDIO, ISSUE_JUMP_MS * 48, ISSUE_JUMP_MS * 48, True, b"a"), limit)
    assert not guard.jumped(video(ISSUE_JUMP_MS + 33), limit)
    assert guard.jumped(video(66, True), limit) and guard.last_jump < -2_000_000  # and back
    assert guard.jumps == 2
    # RTMP's largest composition offset (2.3 h) would decide where segments end: presented at its DTS.
    far = Frame(VIDEO, 90_000, 90_000 + 8_388_607 * 90, True, b"v")
    assert guard.presentable(far, limit).pts == 90_000 and guard.bad_offsets == 1
    near = Frame(VIDEO, 90_000, 90_000 + 6000, False, b"v")
    assert guard.presentable(near, limit) is near


@JUMPS
def test_the_part_cutter_makes_a_jump_a_new_timeline_not_gap_parts(jump_ms):
    frames = [video(0, True), video(33), video(jump_ms, True), video(jump_ms + 33), video(jump_ms + 67)]
    cutter = PartCutter(90000, True, 0.2, 2.0)
    parts = [p for frame in frames for p in cutter.push(frame)] + cutter.flush()
    assert len(parts) == 2 and not any(p.gap for p in parts) and cutter.holes == 0
    before, after = parts
    assert (before.base_dts, before.duration, before.starts_parent, before.ends_parent) == (0, 5940, True, True)
    assert after.base_dts == jump_ms * 90 and after.independent and after.starts_parent
    assert after.duration / 90000 <= declared_part_target(0.2)
    fresh = PartCutter(90000, True, 0.2, 2.0)
    assert [(fresh.push(frame), fresh.new_timeline)[1] for frame in frames] == [False, False, True, False, False]


@pytest.mark.parametrize(
    ("kind", "hole_ms", "gap_seconds"),
    [("video", 2000, 2.0), ("video", 2500, 0.0), ("video", 9000, 0.0), ("audio", 1000, 1.0), ("audio", 3000, 0.0)],
)
def test_gap_parts_fill_at_most_one_segment_duration(kind, hole_ms, gap_seconds):
    """A hole up to the segment duration is GAP parts, as before; a longer one is a new
    timeline: the packager marks a discontinuity and no GAP part is made."""
    if kind == "video":
        cutter = PartCutter(90000, True, 0.2, 2.0)
        step = 3000
        frames = [video(frame_ms(i), i % 60 == 0) for i in range(120)]
        resume = frames[-1].dts + step + hole_ms * 90
        frames += [Frame(VIDEO, resume + i * step, resume + i * step, i % 60 == 0, b"v", 0.0) for i in range(120)]
    else:
        cutter = PartCutter(48000, False, 0.2, 2.0)
        step = 1024
        frames = [audio(i) for i in range(200)]
        resume = frames[-1].dts + step + hole_ms * 48
        frames += [Frame(AUDIO, resume + i * step, resume + i * step, True, b"a", 0.0) for i in range(200)]
    parts = [p for frame in frames for p in cutter.push(frame)] + cutter.flush()
    gap = sum(p.duration for p in parts if p.gap) / cutter.timebase
    assert gap == pytest.approx(gap_seconds, abs=0.01)
    after = next(p for p in parts if p.base_dts >= resume)
    assert after.base_dts == resume and after.starts_parent and after.independent
    assert all(p.duration / cutter.timebase <= declared_part_target(0.2) + 1e-9 for p in parts)  # L5
    assert cutter.new_timelines == (0 if gap_seconds else 1)


@JUMPS
def test_the_segmenter_never_stretches_a_segment_over_a_jump(jump_ms):
    seg = Segmenter(2.0)
    closed: list[SegmentDraft] = []
    for frame in (video(0, True), video(33), video(jump_ms, True), video(jump_ms + 33)):
        closed += seg.push(frame)
    tail = seg.flush()
    assert tail is not None
    closed.append(tail)
    assert [round(d.duration, 3) for d in closed] == [0.066, 0.066]  # one frame interval past the last frame
    assert [d.discontinuity for d in closed] == [False, True]
    assert all(round_half_up(d.duration) <= TD for d in closed)  # T2


# Finding 2: no keyframes, frozen timestamps ------------------------------------------------


@pytest.mark.parametrize("with_audio", [True, False], ids=["audio+video", "video only"])
def test_a_segment_without_keyframes_is_cut_at_three_target_durations(with_audio):
    """Keyframes at 0 and 2 s, then none until 20 s: the segment from 2 s is cut at 8 s
    (3 x TD), video is dropped until the keyframe at 20 s, and audio meanwhile gets segments
    of its own within TARGETDURATION. Without audio, the segment at 20 s is a discontinuity."""
    seg = Segmenter(2.0)
    seg.max_90k = LONGEST * 90000  # as the packager sets it once TARGETDURATION is 2
    frames = [video(frame_ms(i), i in (0, 60) or (i >= 600 and i % 60 == 0)) for i in range(720)]
    if with_audio:
        frames += [audio(i) for i in range(24 * 48000 // 1024)]
        frames.sort(key=lambda f: f.dts / f.track.timebase)
    closed = [d for f in frames for d in seg.push(f)]
    durations = [round(d.duration, 3) for d in closed]
    assert durations[:2] == [2.0, LONGEST], durations
    assert seg.keyframe_cuts == 1 and seg.dropped_video == 600 - 240 - 1
    resumed = next(d for d in closed if d.frames[0].track.kind is Kind.VIDEO and d.start_90k >= 20 * 90000)
    assert resumed.frames[0].keyframe and resumed.start_90k == 20 * 90000
    assert resumed.discontinuity is not with_audio
    if with_audio:
        between = closed[2 : closed.index(resumed)]
        assert len(between) >= 6 and all(d.audio_start and round_half_up(d.duration) <= TD for d in between)
        assert all(a.end_90k == b.start_90k for a, b in zip(closed, closed[1:]))  # no hole in the timeline
    assert all(round_half_up(d.duration) <= TD for d in closed[2:])


def test_a_parent_without_keyframes_is_cut_at_three_target_durations():
    cutter = PartCutter(90000, True, 0.2, 2.0)
    cutter.max_parent_ticks = LONGEST * 90000  # as the packager sets it once TARGETDURATION is 2
    parts: list[ClosedPart] = []
    timelines = 0
    for i in range(720):
        parts += cutter.push(video(frame_ms(i), i in (0, 60) or (i >= 600 and i % 60 == 0)))
        timelines += cutter.new_timeline
    parents = parents_of(parts)
    assert [round(seconds(p), 2) for p in parents[:2]] == [2.0, LONGEST]
    assert cutter.keyframe_cuts == 1 and cutter.dropped == 600 - 240
    assert timelines == 1  # the 12 s of dropped video is longer than GAP parts may fill
    assert not any(p.gap for p in parts)
    resumed = parents[2]
    assert resumed[0].base_dts == 20 * 90000 and resumed[0].independent
    assert all(p[0].independent for p in parents)  # L8


def test_frozen_timestamps_cut_segments_and_parents_at_the_byte_cap():
    """Every frame stamped 4 s: no duration is ever reached, so the byte cap closes segments
    and parents; what is held stays below the cap."""
    from mediacore.packager.config import FRAME_OVERHEAD_BYTES

    cap = 256 * 1024
    order = DecodeOrder()
    seg = Segmenter(2.0, max_bytes=cap)
    cutter = PartCutter(90000, True, 0.2, 2.0, max_parent_bytes=cap)
    closed: list[SegmentDraft] = []
    parts: list[ClosedPart] = []
    for i in range(3000):
        frame = order.fix(Frame(VIDEO, 360000, 360000, i % 30 == 0, b"v" * 4000, 1004.0))
        closed += seg.push(frame)
        parts += cutter.push(frame)
    frame_cost = 4000 + FRAME_OVERHEAD_BYTES
    assert len(closed) >= 30 and seg.byte_cuts >= 30  # video resumes at a keyframe after each cut
    assert all(sum(len(f.data) + FRAME_OVERHEAD_BYTES for f in d.frames) <= cap + frame_cost for d in closed)
    parents = parents_of(parts)
    assert len(parents) >= 30 and cutter.byte_cuts >= 30
    held = [sum(len(s.data) + FRAME_OVERHEAD_BYTES for p in parent for s in p.samples) for parent in parents]
    assert max(held) <= cap + frame_cost
    assert all(parent[0].independent for parent in parents)


def test_a_window_of_nearly_empty_segments_stays_bounded():
    """3 x TD is the least a live playlist lists (W4), but segments of frozen timestamps last
    next to nothing: the window gives way at 3 x its minimum rather than grow without limit."""
    store = HlsStore(window_segments=8, segment_duration=2.0)
    store.add_segment(2.0, b"s" * 188, 1000.0, False, now=0.0)
    for i in range(1000):
        store.add_segment(0.001, b"s" * 188, 1002.0 + i / 1000, False, now=1.0 + i / 1000)
    assert len(store.segments) == 24
    playlist = MediaPlaylist.parse(store.playlist_text())
    assert playlist.target_duration == TD and len(playlist.segments) == 24


# Hostile RTMP publishers beside a healthy stream (slow: ffmpeg) ------------------------------


class LoopLag:
    """The longest the event loop kept a 10 ms timer waiting while the hostile peer ran: the
    healthy stream's poller samples the loop between its sleeps, this watches it throughout."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - start - 0.01)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def hls_playlist(engine: Engine, name: str = "hostile") -> MediaPlaylist:
    return MediaPlaylist.parse(engine.stores[name].playlist_text())


def ll_playlist(engine: Engine, kind: Kind, name: str = "hostile") -> MediaPlaylist:
    return MediaPlaylist.parse(engine.ll_renditions[name][kind].render())


def log_lines(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and text in r.getMessage()]


async def until_ended(engine: Engine, name: str = "hostile") -> None:
    """The publisher left, the end grace passed, and both packagers wrote what it sent and
    ended their playlists (so everything is in them)."""
    await until(
        lambda: engine.stores[name].ended and all(r.ended for r in engine.ll_renditions[name].values()),
        engine.config.hls.end_grace + 10,
        "the hostile stream's end",
    )


@pytest.mark.slow
@JUMPS
async def test_a_timestamp_jump_beside_a_healthy_stream_is_a_discontinuity(engine, clip, healthy_clip, caplog, jump_ms):
    """0-4 s as stamped, 4-8 s moved by the jump (the keyframe at 4 s is stamped `jump_ms`),
    8-10 s back at their own time: two jumps, each one EXT-X-DISCONTINUITY, nothing frozen."""
    caplog.set_level(logging.INFO)
    hostile = HostilePublisher(engine.rtmp_port, clip)  # the clip is read here, not while the loop is watched
    async with HealthyStream(engine, healthy_clip) as healthy:
        with LoopLag() as lag:
            await hostile.start()
            await hostile.send(0, 4000)
            await hostile.send(4000, 8000, lambda ms: ms - 4000 + jump_ms)
            await hostile.send(8000)
            await hostile.finish()
            await until_ended(engine)
        await healthy.check()
    assert lag.worst < LOOP_STALL_LIMIT, f"the event loop stalled for {lag.worst:.3f} s"
    playlist = hls_playlist(engine)
    durations = [s.duration for s in playlist.segments]
    assert playlist.target_duration == TD and len(durations) == 5, durations
    assert all(round_half_up(d) <= TD for d in durations)  # T2
    assert [s.discontinuity for s in playlist.segments] == [False, False, True, False, True]
    assert sum(durations) == pytest.approx(10.0, abs=0.1)  # every frame is in a segment
    for kind in (Kind.VIDEO, Kind.AUDIO):
        ll = ll_playlist(engine, kind)
        assert sum(s.discontinuity for s in ll.segments) == 2  # the renditions line up
        assert all(s.duration <= TD + 0.5 for s in ll.segments if s.uri)
        parts = [p for s in ll.segments for p in s.parts]
        assert 0 < len(parts) <= 5 * TD / 0.2 and not any(p.gap for p in parts)
    assert engine.ll_packagers["hostile"].parts_made < 150  # 10 s of two renditions in 0.2 s parts
    jumps = log_lines(caplog, "mediacore.packager.hls", "timestamps jumped")
    assert len(jumps) == 2 and all("new timeline, EXT-X-DISCONTINUITY" in line for line in jumps), jumps


@pytest.mark.slow
async def test_a_publisher_without_keyframes_beside_a_healthy_stream_is_cut(engine, clip, healthy_clip, caplog):
    """Keyframes at 0 and 2 s, none from 4 s to 20 s, then keyframes again until 30 s: the
    segment and the video parent from 2 s are cut at 8 s (3 x TD), logged once; audio carries
    the HLS timeline until video resumes at 20 s."""
    caplog.set_level(logging.INFO)
    engine.config.hls.window_segments = 30  # keep every segment of the hostile stream listed
    hostile = HostilePublisher(engine.rtmp_port, clip)  # the clip is read here, not while the loop is watched
    async with HealthyStream(engine, healthy_clip) as healthy:
        with LoopLag() as lag:
            await hostile.start()
            await hostile.send(0, 4000)
            await hostile.send(4000, keyframes=False)
            await hostile.send(to_ms=lambda ms: ms + 10000, keyframes=False)
            await hostile.send(to_ms=lambda ms: ms + 20000)
            await hostile.finish()
            await until_ended(engine)
        await healthy.check()
    assert lag.worst < LOOP_STALL_LIMIT, f"the event loop stalled for {lag.worst:.3f} s"
    playlist = hls_playlist(engine)
    durations = [round(s.duration, 2) for s in playlist.segments]
    assert playlist.target_duration == TD
    assert durations[:2] == [2.0, LONGEST], durations
    assert all(round_half_up(d) <= TD for d in durations[2:]), durations
    assert sum(durations) == pytest.approx(30.0, abs=0.2) and not any(s.discontinuity for s in playlist.segments)
    cut = log_lines(caplog, "mediacore.packager.hls", "stream hostile: no keyframe for 6 s; segment cut")
    assert len(cut) == 1, cut
    video = ll_playlist(engine, Kind.VIDEO)
    assert max(s.duration for s in video.segments if s.uri) <= LONGEST + 0.01
    assert sum(s.discontinuity for s in video.segments) == 1  # the 12 s without video
    assert log_lines(caplog, "mediacore.packager.llhls", "no keyframe within 6 s")


@pytest.mark.slow
async def test_frozen_timestamps_beside_a_healthy_stream_are_cut_at_the_byte_cap(engine, clip, healthy_clip, caplog):
    """From 4 s on every frame is stamped 4000 ms: segments and parents are cut at the byte
    cap (1 MiB here), and the playlists stay valid."""
    caplog.set_level(logging.INFO)
    engine.config.hls.max_segment_bytes = 1024 * 1024  # the healthy stream's segments hold about 0.6 MiB
    hostile = HostilePublisher(engine.rtmp_port, clip)  # the clip is read here, not while the loop is watched
    async with HealthyStream(engine, healthy_clip) as healthy:
        with LoopLag() as lag:
            await hostile.start()
            await hostile.send(0, 4000)
            for _ in range(3):
                await hostile.send(4000, to_ms=lambda ms: 4000)
            await hostile.finish()
            await until_ended(engine)
        await healthy.check()
    assert lag.worst < LOOP_STALL_LIMIT, f"the event loop stalled for {lag.worst:.3f} s"
    store = engine.stores["hostile"]
    playlist = hls_playlist(engine)
    assert playlist.target_duration == TD and all(round_half_up(s.duration) <= TD for s in playlist.segments)
    assert max(len(s.data) for s in store.segments) < 2 * 1024 * 1024  # TS overhead on top of the frames
    cuts = log_lines(caplog, "mediacore.packager.hls", "stream hostile: a segment reached 1 MiB")
    assert len(cuts) >= 1 and len(cuts) <= 4, cuts  # logged at the 1st, 2nd, 4th ... cut
    for kind in (Kind.VIDEO, Kind.AUDIO):
        ll_playlist(engine, kind)  # parses (P6, L6)

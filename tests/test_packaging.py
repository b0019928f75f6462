"""Hub fan-out, segmenter, playlist and store window rules, without sockets (TS muxing:
tests/test_ts_mux.py)."""

from __future__ import annotations

import asyncio

import pytest

from mediacore.hub.hub import Discontinuity, Hub, Unpublished
from mediacore.hub.priority_queue import NONREF, REF
from mediacore.hub.publisher import StreamBusy
from mediacore.model.media import Frame, Kind, Track
from mediacore.model.timebase import Unwrapper, rescale, round_half_up, seq_distance
from mediacore.packager.segmenter import Segmenter
from mediacore.playlist.media import MediaPlaylist, Segment
from mediacore.playlist.tags import format_date_time
from mediacore.playlist.uris import hls_segment_uri
from mediacore.store.hls import HlsStore

VIDEO = Track(Kind.VIDEO, "h264", 90000, b"cfg", "avc1.64001f", 1280, 720)
AUDIO = Track(Kind.AUDIO, "aac", 48000, bytes.fromhex("1190"), "mp4a.40.2", sample_rate=48000, channels=2)


def vframe(i: int, key: bool | None = None, track: Track = VIDEO) -> Frame:
    return Frame(track, i * 3000, i * 3000 + 6000, (i % 60 == 0) if key is None else key, b"v" * 100, 1000.0 + i / 30)


def aframe(i: int) -> Frame:
    return Frame(AUDIO, i * 1024, i * 1024, True, b"a" * 10, 1000.0 + i * 1024 / 48000)


def test_round_half_up_is_not_bankers_rounding():
    assert [round_half_up(x) for x in (2.5, 6.5, 2.4999, 0.5)] == [3, 7, 2, 1]
    assert round(2.5) == 2  # the pitfall the helper exists for


def test_unwrapper_and_sequence_distance():
    u = Unwrapper(32)
    assert [u.unwrap(v) for v in (0xFFFFFFF0, 0xFFFFFFFF, 5, 2, 0x10)] == [
        0xFFFFFFF0,
        0xFFFFFFFF,
        2**32 + 5,
        2**32 + 2,
        2**32 + 16,
    ]
    assert seq_distance(65535, 1) == 2 and seq_distance(1, 65535) == -2
    assert rescale(1024, 48000, 90000) == 1920


# Hub ---------------------------------------------------------------------------------


async def test_slow_subscriber_drops_whole_gop_tails_without_stalling_others():
    hub = Hub()
    pub = hub.publish("s")
    stream = hub.get("s")
    slow = stream.subscribe("slow", max_items=10)
    fast = stream.subscribe("fast", max_items=1000)
    for i in range(121):
        pub.send(vframe(i))
    got_fast = [fast.get_nowait() for _ in range(121)]
    assert all(isinstance(f, Frame) for f in got_fast)
    got_slow = []
    while (item := slow.get_nowait()) is not None:
        got_slow.append(item)
    # Each new keyframe evicted the stale GOP's tail; no GOP is delivered with a hole.
    assert [f.dts // 3000 for f in got_slow] == [0, 60, 120]
    assert slow.dropped == 118 and slow.queue.dropped_by_priority[REF] == 118
    assert fast.dropped == 0
    # Keyframe 120 was delivered, so its GOP continues.
    pub.send(vframe(121))
    assert slow.get_nowait().dts == 121 * 3000


async def test_slow_subscriber_keeps_audio_and_loses_disposable_frames_first():
    hub = Hub()
    pub = hub.publish("s")
    sub = hub.get("s").subscribe("slow", max_items=8)
    nonref = b"\x00\x00\x00\x02\x01\x88"  # one slice NAL with nal_ref_idc 0
    ref = b"\x00\x00\x00\x02\x41\x9a"
    pub.send(Frame(VIDEO, 0, 0, True, b"\x00\x00\x00\x02\x65\x88", 1000.0))
    for i in range(1, 6):
        pub.send(Frame(VIDEO, i * 3000, i * 3000, False, ref if i == 1 else nonref, 1000.0))
    for i in range(4):
        pub.send(aframe(i))
    items = [sub.get_nowait() for _ in range(8)]
    assert sub.get_nowait() is None
    kinds = [(f.track.kind.value, f.dts) for f in items]
    # Two disposable frames made room for audio; the keyframe and reference frame stayed.
    assert kinds[:2] == [("video", 0), ("video", 3000)]
    assert [k for k in kinds if k[0] == "audio"] == [("audio", i * 1024) for i in range(4)]
    assert sub.queue.dropped_by_priority[NONREF] == 2 and sub.dropped == 2


async def test_second_publisher_is_refused_and_republish_continues_timeline():
    hub = Hub()
    pub = hub.publish("s")
    with pytest.raises(StreamBusy):
        hub.publish("s")
    sub = hub.get("s").subscribe("t")
    for i in range(30):
        pub.send(vframe(i))
    pub.close()
    pub2 = hub.publish("s")
    pub2.send(vframe(0, key=True))  # the new session restarts its clock at 0
    items = []
    while (item := sub.get_nowait()) is not None:
        items.append(item)
    assert isinstance(items[30], Unpublished) and isinstance(items[31], Discontinuity)
    first_after = items[32]
    assert first_after.dts > items[29].dts, "timeline must continue after republish"


def test_kick_stops_only_the_current_session():
    hub = Hub()
    stopped: list[str] = []
    pub = hub.publish("s", stop=stopped.append)
    assert hub.kick("s", "operator") and stopped == ["operator"]
    pub.close()
    assert not hub.kick("s", "again"), "nobody publishes: nothing to stop"
    hub.publish("s")  # a session that cannot be stopped from outside (a raw RTP input)
    assert not hub.kick("s", "x") and stopped == ["operator"]


async def test_subscription_get_waits_for_frames():
    hub = Hub()
    pub = hub.publish("s")
    sub = hub.get("s").subscribe("t")
    waiter = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    pub.send(vframe(0))
    assert (await asyncio.wait_for(waiter, 1)).dts == 0


# Segmenter ---------------------------------------------------------------------------


def test_segments_start_at_keyframes_after_target():
    seg = Segmenter(2.0)
    closed = []
    for i in range(1, 300):  # frame 0 missing: the first decodable frame is keyframe 45
        closed += seg.push(aframe(i))
        closed += seg.push(vframe(i, key=(i % 45 == 0)))  # 1.5 s GOP: segments of 3 s
    assert [d.frames[0].dts // 3000 for d in closed] == [45, 135]
    assert all(d.frames[0].keyframe and d.frames[0].track.kind is Kind.VIDEO for d in closed)
    assert [d.duration for d in closed] == [3.0, 3.0]
    tail = seg.discontinuity()
    assert tail.frames[0].dts // 3000 == 225
    assert tail.duration == pytest.approx((299 - 225 + 1) / 30)
    seg.push(vframe(400, key=True))
    assert seg.flush().discontinuity


def interleaved_push(seg: Segmenter, video: list[int], seconds: float) -> list:
    """Audio and the given video frame numbers (2 s GOPs), pushed in DTS order."""
    frames = [aframe(i) for i in range(int(seconds * 48000 / 1024))] + [vframe(i) for i in video]
    frames.sort(key=lambda f: f.dts / f.track.timebase)
    return [d for f in frames for d in seg.push(f)]


def video_keyframe_first(draft) -> bool:
    video = [f for f in draft.frames if f.track.kind is Kind.VIDEO]
    return not video or video[0].keyframe


def test_lost_keyframe_cuts_on_audio_within_target_duration():
    """RTP loss took keyframe 120 and the depacketizer dropped its whole GOP: once video
    has stalled 1 s, the segment is cut where its video ended, the audio after it gets a
    segment of its own, and keyframe 180 closes that (every segment within round-half-up 2 s)."""
    seg = Segmenter(2.0)
    closed = interleaved_push(seg, [i for i in range(300) if not 120 <= i < 180], 10.0)
    durations = [round(d.duration, 3) for d in closed]
    assert len(closed) == 4 and all(round_half_up(d) <= 2 for d in durations), durations
    assert durations[0] == 2.0 and 2.0 <= durations[1] <= 2.03  # to the first audio frame after frame 119
    assert closed[2].audio_start and all(f.track.kind is Kind.AUDIO for f in closed[2].frames)
    assert closed[1].end_90k == closed[2].start_90k and closed[3].start_90k == 180 * 3000 + 6000
    assert all(video_keyframe_first(d) for d in closed) and seg.stall_cuts == 1 and seg.dropped_video == 0


def test_video_resuming_mid_gop_is_dropped_until_a_keyframe():
    seg = Segmenter(2.0)
    closed = interleaved_push(seg, [i for i in range(300) if not 120 <= i < 150], 10.0)
    assert seg.stall_cuts == 1 and seg.dropped_video == 30  # frames 150..179 reference the lost GOP
    assert all(video_keyframe_first(d) and round_half_up(d.duration) <= 2 for d in closed)


def test_keyframe_after_a_short_gap_splits_an_overlong_segment():
    """Video stops at 1.8 s (less than the 1 s stall before the keyframe at 2.6 s): the
    keyframe would close a 2.6 s segment, so it is cut where video ended instead."""
    seg = Segmenter(2.0)
    video = [vframe(i, key=i in (0, 78, 138)) for i in range(200) if not 55 <= i < 78]
    frames = [aframe(i) for i in range(int(6 * 48000 / 1024))] + video
    frames.sort(key=lambda f: f.dts / f.track.timebase)
    closed = [d for f in frames for d in seg.push(f)]
    assert [round(d.duration, 2) for d in closed[:2]] == [1.85, 0.75] and closed[1].audio_start
    assert closed[2].frames[0].keyframe and seg.stall_cuts == 0
    assert all(round_half_up(d.duration) <= 2 and video_keyframe_first(d) for d in closed)


def test_long_video_outage_gives_audio_segments_of_the_target():
    seg = Segmenter(2.0)
    closed = interleaved_push(seg, [i for i in range(600) if not 60 <= i < 480], 20.0)
    middle = [d for d in closed if d.audio_start and not any(f.track.kind is Kind.VIDEO for f in d.frames)]
    assert len(middle) >= 4 and all(2.0 - 0.03 <= d.duration <= 2.03 for d in middle[:-1])
    assert all(round_half_up(d.duration) <= 2 and video_keyframe_first(d) for d in closed)


def test_normal_long_gop_is_not_cut_on_audio():
    """A publisher's 3 s GOP with video flowing is a long segment (TARGETDURATION follows), not a stall."""
    seg = Segmenter(2.0)
    frames = [aframe(i) for i in range(int(9.5 * 48000 / 1024))] + [vframe(i, key=i % 90 == 0) for i in range(285)]
    frames.sort(key=lambda f: f.dts / f.track.timebase)
    closed = [d for f in frames for d in seg.push(f)]
    assert [d.duration for d in closed] == [3.0, 3.0, 3.0] and seg.stall_cuts == 0


# Playlist and store ------------------------------------------------------------------


def test_playlist_render_parse_roundtrip():
    pl = MediaPlaylist(
        2,
        3,
        5,
        1,
        True,
        [Segment(5, "a-5.ts", 2.0, 1_700_000_000.0, False), Segment(6, "a-6.ts", 1.96667, 1_700_000_002.0, True)],
    )
    text = pl.render()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n")
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z" in text
    back = MediaPlaylist.parse(text)
    assert back.segments[1].discontinuity and back.media_sequence == 5 and back.discontinuity_sequence == 1
    assert back == pl
    assert format_date_time(0.5) == "1970-01-01T00:00:00.500Z"


def test_store_window_sliding_and_retention():
    store = HlsStore(window_segments=6)
    store.target_duration = 2
    for i in range(10):
        store.add_segment(2.0, b"x", 1000.0 + 2 * i, discontinuity=(i == 1), now=float(i))
    pl = MediaPlaylist.parse(store.playlist_text())
    assert len(pl.segments) == 6 and pl.media_sequence == 4
    assert pl.discontinuity_sequence == 1  # the removed segment 1 carried a DISCONTINUITY
    first_uri = hls_segment_uri(store.session_id, 0)
    assert store.get_segment(first_uri, now=10.0) is not None  # W5: still downloadable
    assert store.get_segment(first_uri, now=100.0) is None
    store.end()
    assert store.playlist_text().endswith("#EXT-X-ENDLIST\n")


def test_store_keeps_three_target_durations():
    store = HlsStore(window_segments=6)
    store.target_duration = 6
    for i in range(12):
        store.add_segment(2.0, b"x", 0.0, False, now=float(i))
    assert sum(s.duration for s in store.segments) >= 18  # W4 wins over the 6-segment window


def test_millisecond_jitter_does_not_skip_a_keyframe():
    """A 2 s GOP stamped in whole milliseconds lands at 1.995 s; it must still cut there."""
    seg = Segmenter(2.0)
    closed = []
    for i in range(0, 241):
        ms = i * 1000 // 30 - (5 if i % 60 == 0 and i else 0)
        frame = Frame(VIDEO, ms * 90, ms * 90, i % 60 == 0, b"v", 0.0)
        closed += seg.push(frame)
    assert len(closed) == 4 and all(abs(d.duration - 2.0) < 0.02 for d in closed)

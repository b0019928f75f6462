"""LL-HLS pure pieces without sockets: part cutting, blocking decisions, rendition state."""

from __future__ import annotations

import random
import struct

import pytest

from mediacore.model.media import Frame, Kind, Track
from mediacore.origin.llhls import Request, advance_part_limit, decide, parse_directives
from mediacore.packager.fmp4 import Sample, box, fragment, full_box
from mediacore.packager.parts import PartCutter, declared_part_target
from mediacore.store.ll import LlRendition

VIDEO = Track(Kind.VIDEO, "h264", 90000, b"")
AUDIO = Track(Kind.AUDIO, "aac", 48000, b"")


def video_frames(n: int, fps: float = 30.0, gop: int = 60, jitter_ms: int = 0):
    for i in range(n):
        ms = round(i * 1000 / fps) + (jitter_ms if i % 7 == 3 else 0)
        yield Frame(VIDEO, ms * 90, ms * 90 + 6000, i % gop == 0, b"x", float(i))


@pytest.mark.parametrize("fps", [24.0, 25.0, 29.97, 30.0, 50.0, 60.0])
def test_video_parts_respect_part_target_at_common_frame_rates(fps):
    target = declared_part_target(0.2)
    cutter = PartCutter(90000, True, 0.2, 2.0)
    parts = []
    for frame in video_frames(int(fps * 20), fps, gop=round(fps * 2), jitter_ms=1):
        parts += cutter.push(frame)
    parents = [[]]
    for part in parts:
        parents[-1].append(part)
        if part.ends_parent:
            parents.append([])
    complete = [p for p in parents if p and p[-1].ends_parent]
    assert len(complete) >= 8
    for parent in complete:
        assert parent[0].independent and parent[0].starts_parent
        assert abs(sum(p.duration for p in parent) / 90000 - 2.0) < 0.05
        for i, part in enumerate(parent):
            seconds = part.duration / 90000
            assert seconds <= target + 1e-9  # L5
            if i < len(parent) - 1:
                assert seconds >= 0.85 * target  # L5 (only the parent's last may be short)


def parents_of(parts) -> list[list]:
    parents = [[]]
    for part in parts:
        parents[-1].append(part)
        if part.ends_parent:
            parents.append([])
    return [p for p in parents if p]


def test_a_video_hole_is_filled_with_gap_parts():
    """RTP loss took keyframe 120 and its whole GOP: the frame before the hole keeps one
    frame interval and its parent ends; GAP parts fill the hole in a parent of their own, so
    the playlist's timeline stays the media's; keyframe 180 starts the next parent."""
    target = declared_part_target(0.2)
    cutter = PartCutter(90000, True, 0.2, 2.0)
    parts = []
    for frame in video_frames(300):
        if not 120 <= frame.wallclock < 180:
            parts += cutter.push(frame)
    assert cutter.holes == 1
    assert all(p.duration / 90000 <= target + 1e-9 for p in parts)  # L5
    assert all(a.base_dts + a.duration == b.base_dts for a, b in zip(parts, parts[1:]))  # no hole in the timeline
    parents = parents_of(parts)
    complete = [p for p in parents if p[-1].ends_parent]
    assert [round(sum(x.duration for x in p) / 90000, 2) for p in complete] == [2.0, 2.0, 2.0, 2.0]
    assert [all(x.gap for x in p) for p in complete] == [False, False, True, False]
    assert not any(x.gap for p in (complete[0], complete[1], complete[3]) for x in p)  # never mixed
    after = complete[3]
    assert after[0].independent and after[0].starts_parent and after[0].base_dts == 6000 * 90


def test_audio_parents_follow_the_segment_grid():
    cutter = PartCutter(48000, False, 0.2, 2.0)
    parts = []
    for i in range(48000 * 60 // 1024):
        parts += cutter.push(Frame(AUDIO, i * 1024, i * 1024, True, b"a", 0.0))
    ends = [p for p in parts if p.ends_parent]
    total = 0
    boundaries = []
    for part in parts:
        total += part.duration
        if part.ends_parent:
            boundaries.append(total / 48000)
    # Parents average exactly 2 s: the k-th boundary stays within one part of 2k s.
    assert all(abs(b - 2.0 * (k + 1)) < 0.2 for k, b in enumerate(boundaries))
    assert len(ends) == len(boundaries) >= 28


@pytest.mark.parametrize("missing", [range(100, 102), range(300, 347)])  # 2 frames; a 1 s hole
def test_lost_audio_frames_keep_parts_within_part_target_and_parents_on_the_grid(missing):
    target = declared_part_target(0.2)
    cutter = PartCutter(48000, False, 0.2, 2.0)
    parts = []
    for i in range(48000 * 20 // 1024):
        if i not in missing:
            parts += cutter.push(Frame(AUDIO, i * 1024, i * 1024, True, b"a", 0.0))
    assert all(p.duration / 48000 <= target + 1e-9 for p in parts)  # L5
    assert all(a.base_dts + a.duration == b.base_dts for a, b in zip(parts, parts[1:]))  # no hole in the timeline
    parents = parents_of(parts)
    media = [p for p in parents if p[-1].ends_parent and not p[0].gap]
    grid = [p for i, p in enumerate(parents[:-1]) if p in media and not parents[i + 1][0].gap]  # not cut by a hole
    assert all(
        abs((p[-1].base_dts + p[-1].duration) / 48000 / 2.0 - round((p[-1].base_dts + p[-1].duration) / 96000)) < 0.1
        for p in grid
    )  # the grid holds (within a part)
    assert cutter.holes == (1 if len(missing) > 10 else 0)
    assert all(all(x.gap for x in p) or not any(x.gap for x in p) for p in parents)


def rendition_with(parents: int, parts_in_progress: int) -> LlRendition:
    r = LlRendition("video", "v", 20, 0.22, 2.0)
    r.set_init(b"init")
    for msn in range(parents):
        for i in range(10):
            r.add_part(b"p", 0.2, i == 0, i == 0, i == 9, 1000.0 + msn * 2 + i * 0.2, now=float(msn), samples=6)
    for i in range(parts_in_progress):
        r.add_part(b"p", 0.2, i == 0, i == 0, False, 2000.0, now=100.0, samples=6)
    return r


def test_gap_parts_are_listed_with_gap_tags_and_never_served():
    r = rendition_with(parents=3, parts_in_progress=0)
    for i in range(10):
        r.add_part(b"", 0.2, False, i == 0, i == 9, 1006.0 + i * 0.2, now=3.0, gap=True)
    r.add_part(b"p", 0.2, True, True, False, 1008.0, now=4.0, samples=6)
    text = r.render()
    gap_parent = r.segments[-1]
    assert gap_parent.gap and r.target_duration == 2
    assert f"#EXT-X-GAP\n#EXTINF:2.00000,\n{gap_parent.uri}" in text
    assert text.count(",GAP=YES") == 10 and "INDEPENDENT=YES,GAP" not in text
    assert r.resource(gap_parent.uri, 5.0) is None and r.resource(gap_parent.parts[0].uri, 5.0) is None
    assert r.resource(r.segments[-2].uri, 5.0) == b"p" * 10  # media parents are served as before
    assert r.frame_rate() == 30.0  # the gap parent does not count


def test_decide_covers_every_blocking_case():
    r = rendition_with(parents=5, parts_in_progress=3)  # complete 0-4, parts 5.0-5.2
    assert r.last_part() == (5, 2) and r.next_part() == (5, 3)
    assert decide(r, Request(None, 1, None)).status == 400  # B6
    assert decide(r, Request(None, None, None)).status == 200
    assert decide(r, Request(4, None, None)).status == 200  # B1 satisfied
    assert decide(r, Request(5, None, None)).status == 0  # B1 wait
    assert decide(r, Request(5, 2, None)).status == 200  # B2 satisfied
    assert decide(r, Request(5, 3, None)).status == 0  # B2 wait
    assert decide(r, Request(4, 99, None)).status == 200  # B3: = part 0 of 5, which exists
    assert decide(r, Request(0, 0, None)).status == 200  # B4
    assert decide(r, Request(8, None, None)).status == 400  # B7: > last + 2
    assert decide(r, Request(7, None, None)).status == 0
    limit = advance_part_limit(0.22)
    assert limit == 14
    assert decide(r, Request(5, 2 + limit + 1, None)).status == 400  # B7 advance part limit
    assert decide(r, Request(5, 2 + limit, None)).status == 0
    r.end(200.0)
    assert decide(r, Request(50, 0, None)).status == 200  # B5


def test_parse_directives_ignores_order_and_rejects_garbage():
    assert parse_directives({"_HLS_part": "2", "_HLS_msn": "7"}) == parse_directives(
        {"_HLS_msn": "7", "_HLS_part": "2"}
    )
    assert parse_directives({"_HLS_skip": "v2"}).skip == "v2"
    assert parse_directives({"_HLS_skip": "NO"}).skip is None
    with pytest.raises(ValueError):
        parse_directives({"_HLS_msn": "-1"})


def test_rendition_window_retention_and_versions():
    r = rendition_with(parents=30, parts_in_progress=2)
    assert len(r.segments) == 20 and r.media_sequence == 10
    old_part = r.part_uri(0, 3)
    assert r.resource(old_part, now=31.0) is not None  # G2: still downloadable
    assert r.resource(old_part, now=500.0) is None
    full = r.render()
    assert "#EXT-X-VERSION:6" in full and full.count("#EXT-X-MAP") == 1
    assert full.count("#EXT-X-PART:") <= 3 * 10 + 2 + 10  # only the last 3 x TD carry parts (G1)
    delta = r.render("YES")
    assert "#EXT-X-VERSION:9" in delta and "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta
    r.end(600.0)
    ended = r.render("YES")
    assert ended.endswith("#EXT-X-ENDLIST\n") and "PRELOAD-HINT" not in ended and "#EXT-X-SKIP" not in ended  # H3, K6


def test_frame_rate_is_the_median_parent_rate_snapped():
    r = rendition_with(parents=6, parts_in_progress=0)  # 60 samples per 2 s parent
    assert r.frame_rate() == 30.0
    r.segments[-1].samples = 61  # one parent stretched by a late keyframe
    r.segments[0].samples = 52  # one that lost frames to a slow moment
    assert r.frame_rate() == 30.0
    for seg in r.segments:
        seg.samples = 50  # 25 fps content
    assert r.frame_rate() == 25.0


def _fragment_box_by_box(samples: list[Sample], base: int, sequence: int, track_id: int) -> bytes:
    """moof + mdat written box by box (ISO/IEC 14496-12 8.8): the reference for fragment()."""
    entries = b"".join(
        struct.pack(">IIIi", s.duration, len(s.data), 0x02000000 if s.keyframe else 0x01010000, s.composition_offset)
        for s in samples
    )

    def moof(offset: int) -> bytes:
        trun = full_box(b"trun", 1, 0x000F01, struct.pack(">Ii", len(samples), offset), entries)
        tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track_id))
        traf = box(b"traf", tfhd, full_box(b"tfdt", 1, 0, struct.pack(">Q", base)), trun)
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    payload = b"".join(s.data for s in samples)
    return moof(len(moof(0)) + 8) + box(b"mdat", payload)


def test_fragment_matches_the_boxes_written_one_by_one() -> None:
    rng = random.Random(14)
    for _ in range(100):
        samples = [
            Sample(
                rng.randrange(1, 6000),
                rng.randbytes(rng.randrange(0, 2000)),
                rng.random() < 0.3,
                rng.randrange(-3000, 9000),
            )
            for _ in range(rng.randrange(0, 16))
        ]
        base, sequence, track = rng.randrange(2**40), rng.randrange(2**32), rng.randrange(1, 3)
        assert fragment(samples, base, sequence, track) == _fragment_box_by_box(samples, base, sequence, track)

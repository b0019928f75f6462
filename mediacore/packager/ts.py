"""MPEG-TS segments, muxed by PyAV (libavformat's mpegts muxer).

We hand the muxer Annex B H.264 (AUD, then SPS/PPS before each IDR) and ADTS-framed AAC,
because PyAV's mux-only streams carry no extradata for the muxer's own conversion. Each
segment is muxed by a fresh muxer, so two things are mended afterwards in one pass over the
188-byte packets: the SDT that libavformat writes first is removed (so PAT then PMT open
every segment, HLS E5), and continuity counters are renumbered to run on from the previous
segment (E2). This runs on a worker thread: PyAV releases the GIL while muxing.

Every segment declares a timed ID3 metadata stream after video and audio (libavformat writes
it as stream_type 0x15 with the 'ID3 ' metadata_descriptor, and its PES with stream_id
0xBD), whether or not it carries a tag: the program's streams never change from one segment
to the next (M6), and a player finds the stream before the first product card. Tags are
muxed at their PTS (mediacore/packager/metadata.py).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np

from mediacore.model.aac import AacConfig, adts_header, parse_asc
from mediacore.model.h264 import AvcConfig, avcc_to_annexb, parse_avcc
from mediacore.model.media import Frame, Kind

TS_PACKET = 188
SDT_PID = 0x0011
NULL_PID = 0x1FFF
_TB90K = Fraction(1, 90000)


@lru_cache(maxsize=64)
def _avc(config: bytes) -> AvcConfig:
    return parse_avcc(config)


@lru_cache(maxsize=64)
def _asc(config: bytes) -> AacConfig:
    return parse_asc(config)


def mux_segment(frames: list[Frame], metadata: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """Mux one segment's frames (already in arrival order) into MPEG-TS bytes, with the
    ID3 tags of `metadata` ((90 kHz PTS, tag) pairs) on the timed metadata stream."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mpegts")
    streams: dict[Kind, av.stream.Stream] = {}
    try:
        for frame in frames:
            kind = frame.track.kind
            if kind not in streams:
                if kind is Kind.VIDEO:
                    streams[kind] = out.add_mux_stream("h264", time_base=_TB90K)
                else:
                    streams[kind] = out.add_mux_stream("aac", rate=frame.track.timebase)
        id3_stream = out.add_data_stream("timed_id3")
        id3_stream.time_base = _TB90K
        for pts, tag in sorted(metadata, key=lambda m: m[0]):
            packet = av.Packet(tag)
            packet.time_base = _TB90K
            packet.dts = pts
            packet.pts = pts
            packet.stream = id3_stream
            out.mux(packet)
        # The muxer needs its streams before the first packet; order packets by DTS in
        # seconds so the interleaver sees a monotonic clock per stream.
        for frame in frames:
            track = frame.track
            if track.kind is Kind.VIDEO:
                data = avcc_to_annexb(frame.data, _avc(track.config), frame.keyframe)
            else:
                asc = _asc(track.config)
                data = adts_header(asc, len(frame.data)) + frame.data
            packet = av.Packet(data)
            packet.time_base = Fraction(1, track.timebase)
            packet.dts = frame.dts
            packet.pts = frame.pts
            packet.is_keyframe = frame.keyframe
            packet.stream = streams[track.kind]
            out.mux(packet)
    finally:
        out.close()
    return buf.getvalue()


def warm_up() -> None:
    """Open, fill and close one muxer with every stream a segment has, and run the continuity
    pass once, on the calling (mux) thread: the first segment would otherwise pay, while a
    stream is live, for what happens once per process (libavformat's muxer set-up, PyAV's
    and numpy's lazily imported modules, the thread's allocator arena)."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mpegts")
    try:
        out.add_mux_stream("h264", time_base=_TB90K)
        out.add_mux_stream("aac", rate=48000)
        out.add_data_stream("timed_id3").time_base = _TB90K
    finally:
        out.close()
    ContinuityCounters().fix(buf.getvalue())


class ContinuityCounters:
    """Per-PID continuity counters carried from one segment to the next.

    The pass is vectorised with numpy over the segment's packets (one row of 188 bytes
    each): a 2 s segment is about 3,000 packets, and a Python loop over them, with a slice
    object per packet, cost as much CPU as parsing the stream's RTMP chunks."""

    def __init__(self) -> None:
        self.last: dict[int, int] = {}

    def fix(self, data: bytes) -> bytes:
        """Drop SDT packets and renumber continuity counters to continue the previous segment."""
        size = len(data)
        if size % TS_PACKET:
            raise ValueError(f"TS output of {size} bytes is not a whole number of packets")
        packets = np.frombuffer(data, np.uint8).reshape(-1, TS_PACKET)
        pids = (packets[:, 1].astype(np.uint16) & 0x1F) << 8 | packets[:, 2]
        kept = pids != SDT_PID
        packets = packets[kept]  # a copy: the input stays untouched
        pids = pids[kept]
        flags = packets[:, 3]
        counted = ((flags & 0x10) != 0) & (pids != NULL_PID)  # the counter steps on a payload
        last = self.last
        for pid in np.unique(pids[counted]).tolist():
            rows = np.flatnonzero(counted & (pids == pid))
            counters = (last.get(pid, 15) + 1 + np.arange(rows.size)) & 0x0F
            flags[rows] = (flags[rows] & 0xF0) | counters.astype(np.uint8)
            last[pid] = int(counters[-1])
        return packets.tobytes()


def probe_first_pids(data: bytes, count: int = 2) -> list[int]:
    return [((data[i + 1] & 0x1F) << 8) | data[i + 2] for i in range(0, min(len(data), count * TS_PACKET), TS_PACKET)]

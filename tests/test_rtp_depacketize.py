"""SDP and depacketizers: crafted edge cases, and real RTP from ffmpeg's rtp muxer."""

from __future__ import annotations

import asyncio
import socket

import av
import pytest
from conftest import free_port, make_clip, require_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.hostile_peers import FFMPEG_SDP
from ingest.rtp import compiled
from ingest.rtp.depacketize import AacDepacketizer, H264Depacketizer
from ingest.rtp.errors import RtpError
from ingest.rtp.h264_depacketize import H264Depacketizer as PureH264Depacketizer
from ingest.rtp.packet import RtpPacket, parse_rtp
from ingest.rtp.sdp import parse_sdp
from ingest.rtp.udp_buffer import widen_receive_buffer
from mediacore.model.h264 import iter_nalus

H264_BUILDS = [PureH264Depacketizer] + ([compiled.H264Depacketizer] if compiled.DEPACKETIZER_COMPILED else [])
both_builds = pytest.mark.parametrize("H264Depacketizer", H264_BUILDS, ids=lambda c: c.__module__)


def test_sdp_from_ffmpeg():
    sdp = parse_sdp(FFMPEG_SDP)
    video, audio = sdp.media
    assert (video.kind, video.payload_type, video.encoding, video.clock_rate) == ("video", 96, "H264", 90000)
    assert [ps[0] & 0x1F for ps in video.sprop_parameter_sets] == [7, 8]
    assert video.control == "streamid=0"
    assert (audio.encoding, audio.clock_rate, audio.channels, audio.aac_config) == (
        "MPEG4-GENERIC",
        48000,
        2,
        b"\x11\x90",
    )
    opus = parse_sdp("m=audio 0 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n").media[0]
    assert (opus.encoding, opus.channels) == ("OPUS", 2)


@pytest.mark.parametrize(
    "text,message",
    [
        ("m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000000\n", "absurd clock rate"),
        ("m=audio 0 RTP/AVP 97\na=rtpmap:97 opus/48000/200\n", "absurd"),
        ("m=video 0 RTP/AVP 300\n", "out of range"),
        ("m=video 0 RTP/AVP 96\n", "has no rtpmap"),
        ("m=video 0\n", "incomplete"),
        ("v=0\n" + "a=x\n" * 5000, "exceeds the limit"),
        ("m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\na=fmtp:96 sprop-parameter-sets=!!!\n", None),
    ],
)
def test_sdp_rejects_absurd_values(text, message):
    if message is None:
        with pytest.raises(RtpError, match="not base64"):
            parse_sdp(text).media[0].sprop_parameter_sets
        return
    with pytest.raises(RtpError, match=message):
        parse_sdp(text)


def rtp(payload: bytes, ts: int = 1000, marker: bool = False, seq: int = 1) -> RtpPacket:
    return RtpPacket(96, seq, ts, 1, payload, marker)


@both_builds
def test_h264_single_stap_and_fu_a(H264Depacketizer):
    d = H264Depacketizer()
    sps, pps, idr = b"\x67\x64\x00\x1f", b"\x68\xeb", b"\x65" + bytes(range(200))
    stap = b"\x18" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert d.push(rtp(stap)) == []
    fu = [
        b"\x7c" + bytes([0x85]) + idr[1:80],
        b"\x7c" + bytes([0x05]) + idr[80:150],
        b"\x7c" + bytes([0x45]) + idr[150:],
    ]
    assert d.push(rtp(fu[0])) == [] and d.push(rtp(fu[1])) == []
    (unit,) = d.push(rtp(fu[2], marker=True))
    assert unit.keyframe and iter_nalus(unit.data) == [sps, pps, idr]
    assert d.sps == sps and d.pps == pps
    (p_frame,) = d.push(rtp(b"\x41abc", ts=4000, marker=True))
    assert not p_frame.keyframe and iter_nalus(p_frame.data) == [b"\x41abc"]


@both_builds
def test_h264_fragments_without_start_are_dropped_and_s_e_together_tolerated(H264Depacketizer):
    d = H264Depacketizer()
    assert d.push(rtp(b"\x7c\x05middle")) == [] and d.push(rtp(b"\x7c\x45end", marker=True)) == []
    assert d.dropped_fragments == 2
    (unit,) = d.push(rtp(b"\x7c\xc5whole", ts=2000, marker=True))  # S and E both set
    assert iter_nalus(unit.data) == [b"\x65whole"]


@both_builds
def test_h264_timestamp_change_completes_an_access_unit_without_marker(H264Depacketizer):
    d = H264Depacketizer()
    d.push(rtp(b"\x41one", ts=1))
    (unit,) = d.push(rtp(b"\x41two", ts=2))
    assert unit.timestamp == 1 and iter_nalus(unit.data) == [b"\x41one"]


@both_builds
def test_loss_drops_the_damaged_frame_and_freezes_until_the_next_keyframe(H264Depacketizer):
    d = H264Depacketizer()
    idr, p_slice = bytes([0x65, 0x88, 1, 2]), bytes([0x41, 0x9A, 3, 4])
    fu = lambda nal, start, end: bytes([0x7C, (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)])  # noqa: E731
    assert [u.keyframe for u in d.push(rtp(idr, ts=0, marker=True))] == [True]
    # Frame 1: its first fragment (with the slice start) is lost; only the rest arrives.
    d.lost()
    assert d.push(rtp(fu(p_slice, False, True) + p_slice[1:], ts=3000, marker=True)) == []
    assert d.damaged_units == 1 and d.wants_keyframe
    # Frame 2 is whole but refers to frame 1: dropped too, until a keyframe.
    assert d.push(rtp(p_slice, ts=6000, marker=True)) == []
    assert d.skipped_units == 1
    assert [u.keyframe for u in d.push(rtp(idr, ts=9000, marker=True))] == [True]
    assert not d.wants_keyframe
    assert len(d.push(rtp(p_slice, ts=12000, marker=True))) == 1
    # A loss while a frame is in progress damages that frame, even if the next packet continues it.
    d.push(rtp(fu(p_slice, True, False) + p_slice[1:], ts=15000))
    d.lost()
    assert d.push(rtp(fu(p_slice, False, True) + b"x", ts=15000, marker=True)) == []
    assert d.damaged_units == 2


@both_builds
def test_repair_mode_passes_damaged_frames_with_what_arrived_and_never_waits(H264Depacketizer):
    """For a decoder that conceals losses (ingest/rtp/repair.py): a damaged frame goes on
    with its whole NAL units (the fragmented slice whose start was lost is left out), the
    frames after it are not held for a keyframe, and no PLI is wanted."""
    d = H264Depacketizer(repair=True)
    idr, p_slice, sei = bytes([0x65, 0x88, 1, 2]), bytes([0x41, 0x9A, 3, 4]), bytes([0x06, 5, 0x80])
    fu = lambda nal, start, end: bytes([0x7C, (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)])  # noqa: E731
    assert [u.keyframe for u in d.push(rtp(idr, ts=0, marker=True))] == [True]
    d.push(rtp(sei, ts=3000))
    d.lost()  # the slice's first fragment
    (damaged,) = d.push(rtp(fu(p_slice, False, True) + p_slice[1:], ts=3000, marker=True))
    assert iter_nalus(damaged.data) == [sei] and d.damaged_units == 1 and d.dropped_fragments == 1
    (after,) = d.push(rtp(p_slice, ts=6000, marker=True))
    assert iter_nalus(after.data) == [p_slice] and d.skipped_units == 0 and not d.wants_keyframe
    # A frame of which nothing arrived whole gives nothing: the repair fills its place.
    d.lost()
    assert d.push(rtp(fu(p_slice, False, True) + p_slice[1:], ts=9000, marker=True)) == []
    assert d.damaged_units == 2 and not d.wants_keyframe


@both_builds
def test_loss_inside_a_non_reference_frame_costs_only_that_frame(H264Depacketizer):
    d = H264Depacketizer()
    idr, p_slice, b_slice = bytes([0x65, 0x88, 1, 2]), bytes([0x41, 0x9A, 3, 4]), bytes([0x01, 0x9E, 5, 6])

    def fu(nal: bytes, start: bool, end: bool) -> bytes:
        return bytes([(nal[0] & 0xE0) | 28, (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)])

    assert len(d.push(rtp(idr, ts=0, marker=True))) == 1
    # A B-frame (nal_ref_idc 0) in three fragments; the middle one is lost: the packets on
    # both sides of the gap share its timestamp, so the gap held nothing else.
    d.push(rtp(fu(b_slice, True, False) + b_slice[1:], ts=9000))
    d.lost()
    assert d.push(rtp(fu(b_slice, False, True) + b"x", ts=9000, marker=True)) == []
    assert (d.damaged_units, d.nonref_damaged_units, d.wants_keyframe) == (1, 1, False)
    assert len(d.push(rtp(p_slice, ts=3000, marker=True))) == 1  # frames after it still decode
    # The same loss inside a reference frame freezes video until a keyframe.
    d.push(rtp(fu(p_slice, True, False) + p_slice[1:], ts=12000))
    d.lost()
    assert d.push(rtp(fu(p_slice, False, True) + b"x", ts=12000, marker=True)) == []
    assert d.wants_keyframe and d.nonref_damaged_units == 1
    assert len(d.push(rtp(idr, ts=15000, marker=True))) == 1
    # A gap between frames may have held whole frames of any kind: a keyframe is needed,
    # even when the frame after the gap is a non-reference one.
    d.lost()
    assert d.push(rtp(b_slice, ts=24000, marker=True)) == []
    assert d.wants_keyframe and d.nonref_damaged_units == 1
    # A non-reference frame whose loss reaches its end (the next packet has another
    # timestamp) may have lost whole frames behind it: a keyframe is needed.
    d.push(rtp(idr, ts=30000, marker=True))
    d.push(rtp(fu(b_slice, True, False) + b_slice[1:], ts=33000))
    d.lost()
    assert d.push(rtp(p_slice, ts=36000, marker=True)) == []
    assert d.wants_keyframe and d.nonref_damaged_units == 1


@both_builds
def test_stap_a_with_truncated_inner_length(H264Depacketizer):
    with pytest.raises(RtpError, match="STAP-A inner NAL unit declares 500 bytes"):
        H264Depacketizer().push(rtp(b"\x18" + (500).to_bytes(2, "big") + b"short"))


def test_compiled_depacketizer_is_built():
    assert compiled.DEPACKETIZER_COMPILED and compiled.H264Depacketizer is not PureH264Depacketizer


NAL_HEADERS = [
    0x65,
    0x41,
    0x01,
    0x06,
    0x67,
    0x68,
    0x18,
    0x7C,
    0x5C,
    0x00,
    0x1A,
]  # IDR, P, B, SEI, SPS, PPS, STAP-A, FU-A...
packet_ops = st.one_of(
    st.just(("lost",)),
    st.tuples(
        st.just("push"),
        st.sampled_from(NAL_HEADERS),
        st.integers(0, 255),
        st.binary(max_size=12),
        st.integers(0, 3),
        st.booleans(),
    ),
)


def run_ops(depacketizer, ops) -> list:
    out = []
    for op in ops:
        if op[0] == "lost":
            depacketizer.lost()
            continue
        _, indicator, second, rest, ts, marker = op
        try:
            out.append(
                ("units", depacketizer.push(rtp(bytes([indicator, second]) + rest, ts=ts * 3000, marker=marker)))
            )
        except RtpError as e:
            out.append(("error", str(e)))
    counters = (
        depacketizer.dropped_fragments,
        depacketizer.damaged_units,
        depacketizer.skipped_units,
        depacketizer.errors,
        depacketizer.wants_keyframe,
        depacketizer.sps,
        depacketizer.pps,
    )
    return out + [("counters", counters)]


@settings(max_examples=400, deadline=None)
@given(st.lists(packet_ops, max_size=60), st.booleans())
def test_h264_depacketizer_twins_agree(ops, repair):
    """Same access units, errors and counters from both builds on random packet sequences
    (FU-A starts, middles and ends, STAP-A with good and bad lengths, losses, markers)."""
    results = [run_ops(cls(repair=repair), ops) for cls in H264_BUILDS]
    assert all(r == results[0] for r in results[1:])


def test_aac_au_headers():
    d = AacDepacketizer()
    frames = [b"a" * 100, b"b" * 7]
    headers = b"".join(((len(f) << 3) | 0).to_bytes(2, "big") for f in frames)
    units = d.push(rtp((len(headers) * 8).to_bytes(2, "big") + headers + b"".join(frames), ts=2**32 - 10))
    assert [u.data for u in units] == frames and units[1].timestamp == (2**32 - 10 + 1024) & 0xFFFFFFFF
    with pytest.raises(RtpError, match="past the payload"):
        d.push(rtp((16).to_bytes(2, "big") + ((900 << 3).to_bytes(2, "big")) + b"tiny"))


async def capture_rtp(cmd: list[str], port: int, seconds: float) -> list[bytes]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    widen_receive_buffer(sock, 8 * 1024 * 1024)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    datagrams = []
    deadline = loop.time() + seconds
    try:
        while loop.time() < deadline:
            try:
                datagrams.append(await asyncio.wait_for(loop.sock_recv(sock, 65536), 0.5))
            except TimeoutError:
                if proc.returncode is not None:
                    break
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        sock.close()
    return datagrams


async def test_real_ffmpeg_rtp_depacketizes_to_the_original_frames():
    require_tool("ffmpeg")
    clip = make_clip()
    vport, aport = free_port(), free_port()
    base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-t", "3", "-i", str(clip)]
    video_packets, audio_packets = await asyncio.gather(
        capture_rtp(base + ["-an", "-c", "copy", "-f", "rtp", f"rtp://127.0.0.1:{vport}?pkt_size=1200"], vport, 8),
        capture_rtp(base + ["-vn", "-c", "copy", "-f", "rtp", f"rtp://127.0.0.1:{aport}"], aport, 8),
    )
    originals = {"video": [], "audio": []}
    with av.open(str(clip)) as container:
        for packet in container.demux():
            if packet.size and packet.pts is not None and packet.pts < 3000:
                originals[packet.stream.type].append(bytes(packet))
    video = H264Depacketizer()
    units = [u for p in video_packets for u in video.push(parse_rtp(p))]
    assert len(units) >= len(originals["video"]) - 1
    # ffmpeg sends the AVCC NAL units unchanged: every frame comes back byte for byte.
    for unit, original in zip(units, originals["video"]):
        assert iter_nalus(unit.data) == iter_nalus(original)
    assert units[0].keyframe  # (ffmpeg sends SPS/PPS in the SDP's sprop-parameter-sets, not in band)
    audio = AacDepacketizer()
    aunits = [u for p in audio_packets for u in audio.push(parse_rtp(p))]
    assert [u.data for u in aunits][: len(originals["audio"]) - 2] == originals["audio"][: len(originals["audio"]) - 2]

"""Enhanced RTMP: the ex-header video tag, HEVC/AV1 configuration records and codec strings,
keyframes, the connect command's fourCcList, and the fMP4 sample entries.

The tags under test are generated, not committed: the first FIXTURE_VIDEO_TAGS video tags (and
the audio between them) that PyAV's bundled FFmpeg (libavformat 62) muxes from tiny clips made
by Debian's ffmpeg (libx265; libsvtav1 or libaom-av1), exactly as an Enhanced RTMP publisher
sends them (benchmarks/ertmp_publish.py writes the same tags to rtmp://)."""

from __future__ import annotations

import functools
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_rtmp_core import AVCC, handshake

from benchmarks.ertmp_publish import publish
from benchmarks.hostile_peers import publish_sequence
from benchmarks.media import make_coded_clip
from ingest.rtmp import amf0, flv
from ingest.rtmp.chunk import AUDIO, COMMAND_AMF0, VIDEO, ChunkReader, ChunkWriter
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.session import ServerSession
from ingest.rtmp.to_stream import RtmpToFrames
from mediacore.hub.hub import Hub
from mediacore.hub.priority_queue import KEY, REF
from mediacore.model import av1, hevc
from mediacore.model.media import Frame, Kind
from mediacore.packager.fmp4 import init_segment

FIXTURE_VIDEO_TAGS = 8
"""Video tags kept of each generated file: sequence start, colorInfo metadata, 6 coded frames."""


@functools.cache
def generated_flv(codec: str) -> bytes:
    """PyAV's Enhanced RTMP FLV of a generated `codec` clip, up to its FIXTURE_VIDEO_TAGS-th
    video tag (script tags dropped), as an FLV file's bytes."""
    out = Path(tempfile.mkdtemp(prefix="ertmp-")) / f"{codec}.flv"
    publish(str(make_coded_clip(codec)), str(out), realtime=False)
    data = out.read_bytes()
    kept, videos = bytearray(data[: int.from_bytes(data[5:9], "big") + 4]), 0
    pos = len(kept)
    while pos + 11 <= len(data) and videos < FIXTURE_VIDEO_TAGS:
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        tag = data[pos : pos + 11 + size + 4]
        if data[pos] in (8, 9):
            kept += tag
            videos += data[pos] == 9
        pos += len(tag)
    return bytes(kept)


def flv_tags(codec: str) -> list[tuple[int, int, bytes]]:
    data = generated_flv(codec)
    assert data[:3] == b"FLV"
    out = []
    pos = int.from_bytes(data[5:9], "big") + 4
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        out.append((data[pos], ts, data[pos + 11 : pos + 11 + size]))
        pos += 11 + size + 4
    return out


def video_tags(codec: str) -> list[bytes]:
    return [body for type_id, _, body in flv_tags(codec) if type_id == 9]


# The ex-header tag ------------------------------------------------------------------------


def test_pyav_hevc_tags_parse():
    tags = [flv.parse_video(t) for t in video_tags("hevc")]
    assert all(t.fourcc == "hvc1" and t.codec == "hevc" for t in tags)
    assert tags[0].packet_type == flv.SEQUENCE_START and tags[0].body[0] == 1
    assert tags[1].packet_type == flv.OTHER  # PacketTypeMetadata (colorInfo)
    first = tags[2]
    assert first.packet_type == flv.CODED_FRAMES and first.frame_type == flv.FRAME_KEY
    assert first.composition_time > 0  # B-frames: the first picture presents later
    # FFmpeg sends CodedFramesX (no composition time) where the offset is zero.
    assert {raw[0] & 0x0F for raw in video_tags("hevc")[2:]} == {flv.EX_CODED_FRAMES, flv.EX_CODED_FRAMES_X}
    assert all(t.packet_type == flv.CODED_FRAMES for t in tags[2:])


def test_pyav_av1_tags_parse_without_composition_time():
    raw = video_tags("av1")
    tags = [flv.parse_video(t) for t in raw]
    assert all(t.fourcc == "av01" and t.codec == "av1" for t in tags)
    assert tags[0].packet_type == flv.SEQUENCE_START and tags[0].body[0] == 0x81
    assert tags[2].packet_type == flv.CODED_FRAMES and tags[2].composition_time == 0
    assert tags[2].body == raw[2][5:]  # AV1 CodedFrames: the OBUs right after the FourCC


def test_composition_time_only_in_coded_frames():
    body = b"\x00\x00\x00\x02\x26\x01"
    coded = flv.parse_video(flv.ex_video_payload("hvc1", flv.EX_CODED_FRAMES, body, True, cts=-40))
    assert (coded.composition_time, coded.body, coded.frame_type) == (-40, body, flv.FRAME_KEY)
    x = flv.parse_video(flv.ex_video_payload("hvc1", flv.EX_CODED_FRAMES_X, body))
    assert (x.packet_type, x.composition_time, x.body, x.frame_type) == (flv.CODED_FRAMES, 0, body, flv.FRAME_INTER)
    end = flv.parse_video(flv.ex_video_payload("hvc1", flv.EX_SEQUENCE_END, b""))
    assert end.packet_type == flv.SEQUENCE_END
    ts = flv.parse_video(flv.ex_video_payload("av01", flv.EX_MPEG2TS_SEQUENCE_START, b"\x80\x04abcd"))
    assert ts.packet_type == flv.OTHER
    command = flv.parse_video(bytes([0x80 | (flv.FRAME_COMMAND << 4) | flv.EX_CODED_FRAMES]) + b"hvc1\x00\x00\x00\x01")
    assert command.packet_type == flv.OTHER


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x90hvc", "shorter than its 5-byte header"),
        (b"\x91hvc1\x00\x00", "lack the composition time"),
        (b"\x96hvc1", "packet type 6"),  # v2 Multitrack
        (b"\x97hvc1", "packet type 7"),  # v2 ModEx
        (b"\x9fhvc1", "packet type 15"),
    ],
)
def test_truncated_or_unknown_ex_headers_are_errors(payload, message):
    with pytest.raises(RtmpError, match=message):
        flv.parse_video(payload)


def test_legacy_avc_tags_are_unchanged():
    tag = flv.parse_video(flv.video_payload(True, flv.AVC_NALU, -2, b"\x00\x00\x00\x01\x65"))
    assert (tag.codec, tag.fourcc, tag.packet_type, tag.composition_time) == ("h264", "", flv.AVC_NALU, -2)
    assert flv.parse_video(bytes([0x12, 0, 0, 0, 0])).packet_type == flv.OTHER


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_fuzzed_ex_header_tags_raise_only_rtmp_errors(data):
    payload = bytes([data[0] | 0x80]) + data[1:]
    try:
        tag = flv.parse_video(payload)
    except RtmpError:
        return
    assert tag.fourcc == payload[1:5].decode("latin-1")
    assert len(tag.body) <= len(payload) - 5


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["hvc1", "av01", "avc1"]),
    st.integers(0, 5),
    st.booleans(),
    st.binary(max_size=80),
)
def test_fuzzed_ex_header_messages_into_frames_raise_only_rtmp_errors(fourcc, packet_type, key, body):
    """A converter fed a real sequence start, then arbitrary ex-header messages, never raises
    anything the server would not turn into a closed session (RtmpError)."""
    conv = RtmpToFrames("fuzz")
    if fourcc != "avc1":
        conv.push(VIDEO, 0, video_tags("hevc" if fourcc == "hvc1" else "av1")[0], 0.0)
    try:
        conv.push(VIDEO, 40, flv.ex_video_payload(fourcc, packet_type, body, key), 0.0)
    except RtmpError:
        pass


# Configuration records and codec strings -----------------------------------------------


def hvcc(profile_space=0, tier=0, profile=1, compat=0x60000000, constraints=b"\xb0" + b"\x00" * 5, level=93) -> bytes:
    sps = bytes.fromhex("420101016000000300b0")  # an SPS NAL header and the start of its body (not parsed here)
    header = bytes([1, (profile_space << 6) | (tier << 5) | profile]) + struct.pack(">I", compat) + constraints
    header += bytes([level, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 1])
    return header + bytes([0x80 | hevc.NAL_SPS]) + struct.pack(">HH", 1, len(sps)) + sps


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({}, "hvc1.1.6.L93.B0"),  # Main (Apple's example)
        ({"profile": 2, "compat": 0x20000000, "level": 120}, "hvc1.2.4.L120.B0"),  # Main 10
        ({"tier": 1, "level": 153}, "hvc1.1.6.H153.B0"),
        ({"profile_space": 1}, "hvc1.A1.6.L93.B0"),
        ({"constraints": bytes(6)}, "hvc1.1.6.L93"),  # trailing zero bytes left out
        ({"constraints": b"\x90\x00\x00\x00\x00\x01"}, "hvc1.1.6.L93.90.0.0.0.0.1"),
    ],
)
def test_hevc_codec_strings(fields, expected):
    assert hevc.parse_hvcc(hvcc(**fields)).codec_string == expected


def test_hevc_record_from_pyav_and_its_sps():
    record = flv.parse_video(video_tags("hevc")[0]).body
    config = hevc.parse_hvcc(record)
    assert config.codec_string == "hvc1.1.6.L60.90"  # x265 Main, level 2, progressive + frame-only
    assert config.nal_length_size == 4
    assert [t for t, _ in config.arrays][:3] == [hevc.NAL_VPS, hevc.NAL_SPS, hevc.NAL_PPS]
    assert hevc.parse_sps(config.units(hevc.NAL_SPS)[0]) == hevc.HevcSps(320, 240)


@pytest.mark.parametrize("cut", [0, 5, 22, 24, 27, 30])
def test_truncated_hvcc_is_an_error(cut):
    record = flv.parse_video(video_tags("hevc")[0]).body
    with pytest.raises(hevc.HevcError):
        hevc.parse_hvcc(record[:cut])


def test_hevc_irap_detection():
    frames = [flv.parse_video(t) for t in video_tags("hevc")[2:]]
    assert [hevc.contains_irap(f.body) for f in frames] == [f.frame_type == flv.FRAME_KEY for f in frames]
    idr = b"\x00\x00\x00\x03" + bytes([19 << 1, 1, 0xAF])  # IDR_W_RADL
    trail = b"\x00\x00\x00\x03" + bytes([1 << 1, 1, 0xAF])  # TRAIL_R
    cra = b"\x00\x00\x00\x03" + bytes([21 << 1, 1, 0xAF])
    assert (hevc.contains_irap(idr), hevc.contains_irap(trail), hevc.contains_irap(cra)) == (True, False, True)
    assert hevc.contains_irap(b"\x00\x00\x00\x09\x26") is None


def av1c(profile: int, level: int, tier: int, high_bitdepth: bool, twelve_bit: bool) -> bytes:
    b2 = (tier << 7) | (high_bitdepth << 6) | (twelve_bit << 5) | 0x0C
    return bytes([0x81, (profile << 5) | level, b2, 0])


@pytest.mark.parametrize(
    "fields, expected",
    [
        ((0, 8, 0, False, False), "av01.0.08M.08"),
        ((0, 4, 0, True, False), "av01.0.04M.10"),
        ((2, 13, 1, True, True), "av01.2.13H.12"),
        ((1, 9, 0, True, False), "av01.1.09M.10"),
    ],
)
def test_av1_codec_strings(fields, expected):
    assert av1.parse_av1c(av1c(*fields)).codec_string == expected


def test_av1_record_from_pyav():
    config = av1.parse_av1c(flv.parse_video(video_tags("av1")[0]).body)
    assert config.codec_string == "av01.0.00M.08"
    assert (config.width, config.height, config.reduced_still_picture_header) == (320, 240, False)


@pytest.mark.parametrize("record", [b"", b"\x81\x00\x0c", b"\x01\x00\x0c\x00", b"\x81\x00\x0c\x00\x0a\x0b\x00"])
def test_bad_av1c_is_an_error(record):
    with pytest.raises(av1.Av1Error):
        av1.parse_av1c(record)


def test_av1_keyframes_and_temporal_delimiters():
    frames = [flv.parse_video(t) for t in video_tags("av1")[2:]]
    assert [av1.is_keyframe(f.body) for f in frames] == [f.frame_type == flv.FRAME_KEY for f in frames]
    unit = frames[0].body
    with_td = b"\x12\x00" + unit  # a temporal delimiter OBU (type 2, size 0) first
    assert av1.strip_temporal_delimiters(with_td) == unit
    assert av1.strip_temporal_delimiters(unit) is unit
    assert av1.is_keyframe(b"\x32\x05\x00") is None  # frame OBU declaring 5 bytes, 1 present


# Ingest: frames and tracks ---------------------------------------------------------------


@pytest.mark.parametrize("codec, codec_string", [("hevc", "hvc1.1.6.L60.90"), ("av1", "av01.0.00M.08")])
def test_pyav_publish_becomes_tracks_and_frames(codec, codec_string):
    conv = RtmpToFrames("t")
    tracks, frames = [], []
    for type_id, ts, body in flv_tags(codec):
        t, f = conv.push(VIDEO if type_id == 9 else AUDIO, ts, body, 100.0)
        tracks += t
        frames += f
    video = [t for t in tracks if t.kind is Kind.VIDEO]
    assert [(t.codec, t.codec_string, t.width, t.height) for t in video] == [(codec, codec_string, 320, 240)]
    vframes = [f for f in frames if f.kind is Kind.VIDEO]
    assert len(vframes) == 6 and vframes[0].keyframe and not any(f.keyframe for f in vframes[1:])
    if codec == "hevc":
        assert vframes[0].pts > vframes[0].dts  # composition time applied
    assert all(f.pts == f.dts for f in vframes) == (codec == "av1")


def test_avc1_fourcc_is_h264_with_composition_time():
    conv = RtmpToFrames("t")
    (track,), _ = conv.push(VIDEO, 0, flv.ex_video_payload("avc1", flv.EX_SEQUENCE_START, AVCC, True), 0.0)
    assert (track.codec, track.codec_string, track.width) == ("h264", "avc1.64001f", 1280)
    idr = b"\x00\x00\x00\x02\x65\x88"
    _, (frame,) = conv.push(VIDEO, 40, flv.ex_video_payload("avc1", flv.EX_CODED_FRAMES, idr, True, cts=80), 0.0)
    assert (frame.dts, frame.pts, frame.keyframe, frame.data) == (40 * 90, 120 * 90, True, idr)


def test_unsupported_fourcc_closes_the_session():
    conv = RtmpToFrames("t")
    with pytest.raises(RtmpError, match="'vp09' is not supported"):
        conv.push(VIDEO, 0, flv.ex_video_payload("vp09", flv.EX_SEQUENCE_START, b"\x01\x00\x00\x00"), 0.0)


def test_bad_hevc_sequence_start_is_an_error():
    with pytest.raises(RtmpError, match="bad HEVC sequence header"):
        RtmpToFrames("t").push(VIDEO, 0, flv.ex_video_payload("hvc1", flv.EX_SEQUENCE_START, b"\x01\x02"), 0.0)


def test_coded_frames_before_sequence_start_are_ignored():
    conv = RtmpToFrames("t")
    assert conv.push(VIDEO, 0, video_tags("hevc")[2], 0.0) == ([], [])
    assert conv.counters.ignored == 1


# Connect: fourCcList ---------------------------------------------------------------------


def connect_reply(command: dict) -> dict:
    s = ServerSession()
    handshake(s)
    s.receive_data(ChunkWriter(128).write(3, COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, command)))
    replies = [amf0.decode(m.payload) for m in ChunkReader().feed(s.data_to_send()) if m.type_id == COMMAND_AMF0]
    assert replies[0][0] == "_result"
    return replies[0][2]


def test_fourcc_list_is_answered_with_what_the_server_takes():
    base = {"app": "live", "tcUrl": "rtmp://h/live"}
    assert connect_reply({**base, "fourCcList": ["av01", "vp09", "hvc1"]})["fourCcList"] == ["hvc1", "av01"]
    assert connect_reply({**base, "fourCcList": ["*"]})["fourCcList"] == ["avc1", "hvc1", "av01"]
    assert "fourCcList" not in connect_reply(base)  # legacy clients see the reply they always did
    s = ServerSession()
    handshake(s)
    s.receive_data(publish_sequence("x", ChunkWriter(128)))
    assert s.fourcc_list == []


# Output: sample entries, hub priority ----------------------------------------------------


@pytest.mark.parametrize("codec, entry, box", [("hevc", b"hvc1", b"hvcC"), ("av1", b"av01", b"av1C")])
def test_init_segment_sample_entries(codec, entry, box):
    conv = RtmpToFrames("t")
    (track,), _ = conv.push(VIDEO, 0, video_tags(codec)[0], 0.0)
    init = init_segment(track)
    assert entry in init and box + track.config in init
    assert b"avc1" not in init and b"avcC" not in init


def test_hub_priority_of_hevc_frames_is_conservative():
    conv = RtmpToFrames("t")
    (track,), _ = conv.push(VIDEO, 0, video_tags("hevc")[0], 0.0)
    hub = Hub()
    hub.publish("s")
    stream = hub.get("s")
    assert stream is not None
    # A TRAIL_N picture (nal_ref_idc would read 0 if parsed as H.264) is never shed as disposable.
    trail_n = b"\x00\x00\x00\x03" + bytes([0 << 1, 1, 0xAF])
    assert stream._priority(Frame(track, 0, 0, False, trail_n)) == REF
    assert stream._priority(Frame(track, 0, 0, True, trail_n)) == KEY

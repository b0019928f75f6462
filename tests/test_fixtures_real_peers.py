"""Bytes captured from real peers (ffmpeg, GStreamer), read by the project's own parsers.

Hand-built sessions test what we believe encoders send; these fixtures pin what they do send
(tests/data/README.md gives the command that captured each one and how it was cut). Stream
parsers are fed each capture whole and one byte at a time, which must give the same events,
and every fixture seeds a fuzz test in which only the project's error type may escape.
Random fields of a capture (SSRC, sequence numbers, ports) are read from the files, never
hard-coded, so that a re-capture only changes the bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ingest.rtmp import amf0
from ingest.rtmp.chunk import COMMAND_AMF0, DATA_AMF0, SET_CHUNK_SIZE, ChunkReader, Message
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.handshake import HANDSHAKE_SIZE
from ingest.rtmp.session import Connected, Event, MediaMessage, Metadata, PublishRequest, ServerSession
from ingest.rtmp.to_stream import RtmpToFrames
from ingest.rtp import compiled
from ingest.rtp import rtp_packet as pure_rtp
from ingest.rtp.access_unit import AccessUnit
from ingest.rtp.depacketize import AacDepacketizer, OpusDepacketizer, opus_packet_samples
from ingest.rtp.errors import RtpError
from ingest.rtp.h264_depacketize import FU_A, STAP_A
from ingest.rtp.h264_depacketize import H264Depacketizer as PureH264Depacketizer
from ingest.rtp.latm import MAX_AAC_FRAME_BYTES, LatmDepacketizer, StreamMuxConfig, parse_stream_mux_config
from ingest.rtp.packet import RtpPacket, parse_rtp
from ingest.rtp.rtsp import Interleaved, Request, RtspParser
from ingest.rtp.sdp import MediaDescription, check_ingestible, parse_sdp
from ingest.rtp.to_stream import aac_track, audio_track

DATA = Path(__file__).resolve().parent / "data"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSERS = [pure_rtp.parse_rtp] + ([compiled.parse_rtp] if compiled.RTP_COMPILED else [])
H264_BUILDS = [PureH264Depacketizer] + ([compiled.H264Depacketizer] if compiled.DEPACKETIZER_COMPILED else [])
both_parsers = pytest.mark.parametrize("parse", PARSERS, ids=lambda f: f.__module__)
both_builds = pytest.mark.parametrize("depacketizer", H264_BUILDS, ids=lambda c: c.__module__)


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def datagrams(data: bytes) -> list[bytes]:
    """Datagrams stored back to back, each after its 2-byte big-endian length."""
    out = []
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    assert pos == len(data) and all(out), "a capture file must hold whole datagrams only"
    return out


RTMP_C0C1 = fixture("rtmp_ffmpeg_c0c1.bin")
RTMP_PUBLISH = fixture("rtmp_ffmpeg_publish.bin")
PUBLISH_FLIGHT_END = 335  # where ffmpeg's publish command ends; it then waits for NetStream.Publish.Start
H264_RTP = datagrams(fixture("rtp_ffmpeg_h264.bin"))
AAC_RTP = datagrams(fixture("rtp_ffmpeg_aac.bin"))
OPUS_RTP = datagrams(fixture("rtp_ffmpeg_opus.bin"))
H264_SDP = fixture("rtp_ffmpeg_h264.sdp").decode()
AAC_SDP = fixture("rtp_ffmpeg_aac.sdp").decode()
OPUS_SDP = fixture("rtp_ffmpeg_opus.sdp").decode()
RTSP_ANNOUNCE = fixture("rtsp_gstreamer_announce.bin")
LATM_SDP = fixture("rtsp_gstreamer_latm.sdp").decode()
LATM_RTP = datagrams(fixture("rtp_gstreamer_latm.bin"))
LATM_RTP_MTU100 = datagrams(fixture("rtp_gstreamer_latm_mtu100.bin"))
LATM_MTU100_CONFIG = bytes.fromhex("40002310adca00")  # from rtpmp4apay's caps (tests/data/README.md)


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def splice(seed: bytes, changes: Iterable[tuple[int, int, bytes]]) -> bytes:
    """The seed with spans replaced by other bytes: input that is mostly valid, so that the
    parser gets past its first checks before it meets the damage."""
    data = seed
    for at, cut, insert in changes:
        at %= len(data) + 1
        data = data[:at] + insert + data[at + cut :]
    return data


edits = st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 16), st.binary(max_size=16)), max_size=4)


# RTMP: ffmpeg publishing -------------------------------------------------------------


@dataclass
class RtmpReplay:
    handshake_reply: bytes  # S0+S1+S2
    events: list[Event]
    offsets: list[int]  # for each event, the bytes of RTMP_PUBLISH fed when it came out
    replies: bytes  # what the server sent after the handshake


def replay_rtmp(
    split: Callable[[bytes], list[bytes]], publish: bytes = RTMP_PUBLISH, flight_end: int = PUBLISH_FLIGHT_END
) -> RtmpReplay:
    """Feed ffmpeg's bytes as reads cut by `split`, accepting the publish as the server shell
    does. The command flight and the media flight are never in one read: ffmpeg waited for
    the server's reply between them."""
    session = ServerSession()
    for piece in split(RTMP_C0C1):
        assert session.receive_data(piece) == []
    reply = session.data_to_send()
    c2 = reply[1 : 1 + HANDSHAKE_SIZE]  # ffmpeg echoes S1; its captured C2 echoed another server's S1
    for piece in split(c2):
        assert session.receive_data(piece) == []
    assert session.state == "connecting"
    events: list[Event] = []
    offsets: list[int] = []
    fed = 0
    for flight in (publish[:flight_end], publish[flight_end:]):
        for piece in split(flight):
            fed += len(piece)
            for ev in session.receive_data(piece):
                events.append(ev)
                offsets.append(fed)
                if isinstance(ev, PublishRequest):
                    session.accept_publish()
    return RtmpReplay(reply, events, offsets, session.data_to_send())


def test_ffmpeg_handshake_c0c1() -> None:
    assert len(RTMP_C0C1) == 1 + HANDSHAKE_SIZE and RTMP_C0C1[0] == 3
    assert RTMP_C0C1[1:5] == bytes(4)  # C1 time: ffmpeg starts at zero
    assert RTMP_C0C1[5:9] == bytes((9, 0, 124, 2))  # ffmpeg's C1 "version" (Flash 9.0.124.2)
    reply = replay_rtmp(lambda b: [b]).handshake_reply
    assert len(reply) == 1 + 2 * HANDSHAKE_SIZE and reply[0] == 3
    s2 = reply[1 + HANDSHAKE_SIZE :]
    assert s2[:4] == RTMP_C0C1[1:5] and s2[8:] == RTMP_C0C1[9:]  # S2 echoes C1's time and random bytes


def test_ffmpeg_publish_chunk_stream_whole_and_bytewise() -> None:
    """The chunk layer sees the same messages however the bytes arrive, in ffmpeg's order."""

    def key(messages: list[Message]) -> list[tuple[int, int, int, bytes, int]]:
        return [(m.type_id, m.stream_id, m.timestamp, m.payload, m.csid) for m in messages]

    whole = ChunkReader().feed(RTMP_PUBLISH)
    reader = ChunkReader()
    one_by_one: list[Message] = []
    for piece in bytewise(RTMP_PUBLISH):
        one_by_one += reader.feed(piece)
    assert key(whole) == key(one_by_one)
    assert reader.buffered == 0  # the file ends on a chunk boundary
    names = [amf0.decode(m.payload)[0] if m.type_id in (COMMAND_AMF0, DATA_AMF0) else m.type_id for m in whole]
    assert names == [
        "connect",
        SET_CHUNK_SIZE,
        "releaseStream",
        "FCPublish",
        "createStream",
        "publish",
        "@setDataFrame",
        9,
        8,
    ]
    assert whole[1].payload == (4096).to_bytes(4, "big")  # ffmpeg's chunk size, sent right after connect
    assert amf0.decode(whole[5].payload) == ["publish", 5.0, None, "fixture", "live"]
    assert whole[5].stream_id == 1 and all(m.stream_id == 1 for m in whole[6:])


def test_ffmpeg_publish_session_events() -> None:
    whole = replay_rtmp(lambda b: [b])
    one = replay_rtmp(bytewise)
    assert whole.events == one.events
    assert whole.replies == one.replies
    assert [type(ev) for ev in one.events] == [Connected, PublishRequest, Metadata, MediaMessage, MediaMessage]
    connected, publish, metadata, video, audio = one.events
    assert isinstance(connected, Connected) and connected.app == "live"
    assert connected.tc_url.startswith("rtmp://127.0.0.1:") and connected.tc_url.endswith("/live")
    assert connected.flash_ver.startswith("FMLE/3.0 (compatible; Lavf")
    assert publish == PublishRequest("fixture", "", "live")
    assert one.offsets[1] == PUBLISH_FLIGHT_END  # the publish completes on the flight's last byte
    assert one.offsets[-1] == len(RTMP_PUBLISH)  # the AAC sequence header on the file's last byte
    assert isinstance(metadata, Metadata)
    values = metadata.values
    assert (values["width"], values["height"], values["framerate"]) == (160.0, 120.0, 10.0)
    assert (values["videocodecid"], values["audiocodecid"], values["audiosamplerate"]) == (7.0, 10.0, 48000.0)
    assert isinstance(video, MediaMessage) and isinstance(audio, MediaMessage)
    assert video.payload[:2] == b"\x17\x00" and audio.payload[:2] == b"\xaf\x00"  # AVC and AAC sequence headers
    conv = RtmpToFrames("fixture")
    video_track = conv.push(video.type_id, video.timestamp, video.payload, 0.0)[0][0]
    audio_track = conv.push(audio.type_id, audio.timestamp, audio.payload, 0.0)[0][0]
    assert (video_track.codec_string, video_track.width, video_track.height) == ("avc1.64000a", 160, 120)
    assert (audio_track.codec_string, audio_track.sample_rate, audio_track.channels) == ("mp4a.40.2", 48000, 1)


def test_ffmpeg_gets_the_replies_it_waits_for() -> None:
    commands = [
        amf0.decode(m.payload)
        for m in ChunkReader().feed(replay_rtmp(lambda b: [b]).replies)
        if m.type_id == COMMAND_AMF0
    ]
    assert commands[0][0] == "_result" and commands[0][3]["code"] == "NetConnection.Connect.Success"
    assert ["_result", 4.0, None, 1.0] in commands  # createStream (transaction 4) -> stream 1
    assert commands[-1][0] == "onStatus" and commands[-1][3]["code"] == "NetStream.Publish.Start"


@FUZZ
@given(edits, st.integers(1, 64))
@example([], 1)
@example([(PUBLISH_FLIGHT_END, 0, b"\x00")], 1)
def test_fuzz_rtmp_session_from_ffmpeg_capture(changes: list[tuple[int, int, bytes]], read_size: int) -> None:
    data = splice(RTMP_PUBLISH, changes)

    def split(b: bytes) -> list[bytes]:
        return [b[i : i + read_size] for i in range(0, len(b), read_size)]

    if data == RTMP_PUBLISH:  # the seed itself runs unguarded: it must parse, whatever the read size
        assert [type(ev) for ev in replay_rtmp(split).events][-2:] == [MediaMessage, MediaMessage]
        return
    conv = RtmpToFrames("fixture")
    try:
        for ev in replay_rtmp(split, data, flight_end=min(PUBLISH_FLIGHT_END, len(data))).events:
            if isinstance(ev, MediaMessage):
                conv.push(ev.type_id, ev.timestamp, ev.payload, 0.0)
    except RtmpError:
        pass  # refused input; any other exception fails the test


# RTSP: GStreamer's ANNOUNCE ----------------------------------------------------------


def rtsp_messages(pieces: list[bytes]) -> list[Request | Interleaved]:
    parser = RtspParser()
    out: list[Request | Interleaved] = []
    for piece in pieces:
        out += parser.feed(piece)
    return out


def test_gstreamer_announce_whole_and_bytewise() -> None:
    whole = rtsp_messages([RTSP_ANNOUNCE])
    assert whole == rtsp_messages(bytewise(RTSP_ANNOUNCE))
    assert len(whole) == 1 and isinstance(whole[0], Request)
    request = whole[0]
    assert request.method == "ANNOUNCE" and request.uri.endswith("/live/fixture")
    assert request.cseq == "2"  # OPTIONS was 1
    assert request.headers["content-type"] == "application/sdp"
    assert request.headers["user-agent"].startswith("GStreamer/")
    assert int(request.headers["content-length"]) == len(request.body) == 423
    (media,) = parse_sdp(request.body.decode()).media
    assert (media.kind, media.payload_type, media.encoding, media.clock_rate) == ("video", 96, "H264", 90000)
    assert media.control == "stream=0" and media.fmtp["packetization-mode"] == "1"
    sps, pps = media.sprop_parameter_sets
    assert (sps[0] & 0x1F, pps[0] & 0x1F) == (7, 8)
    assert sps[1] == 244  # High 4:4:4 Predictive: videotestsrc negotiates Y444 with x264enc
    check_ingestible(parse_sdp(request.body.decode()))


@FUZZ
@given(edits, st.integers(1, 97))
@example([], 1)
def test_fuzz_rtsp_parser_from_gstreamer_capture(changes: list[tuple[int, int, bytes]], read_size: int) -> None:
    data = splice(RTSP_ANNOUNCE, changes)
    outcomes: list[list[Request | Interleaved] | None] = []
    for pieces in ([data], [data[i : i + read_size] for i in range(0, len(data), read_size)]):
        try:
            outcomes.append(rtsp_messages(pieces))
        except RtpError:
            outcomes.append(None)  # refused input; any other exception fails the test
    assert outcomes[0] == outcomes[1], "whole and split reads must agree"


# SDP: ffmpeg's -sdp_file -------------------------------------------------------------


def only_media(text: str) -> MediaDescription:
    sdp = parse_sdp(text)
    check_ingestible(sdp)
    (media,) = sdp.media
    assert 0 < media.port <= 65535 and media.rtcp_port == 0  # ffmpeg sends RTCP to port + 1
    return media


def test_ffmpeg_sdps() -> None:
    h264, aac, opus = only_media(H264_SDP), only_media(AAC_SDP), only_media(OPUS_SDP)
    assert (h264.kind, h264.payload_type, h264.encoding, h264.clock_rate) == ("video", 96, "H264", 90000)
    assert h264.fmtp == {"packetization-mode": "1"} and h264.sprop_parameter_sets == []  # SPS/PPS go in band
    assert (aac.kind, aac.payload_type, aac.encoding, aac.clock_rate, aac.channels) == (
        "audio",
        97,
        "MPEG4-GENERIC",
        48000,
        1,
    )
    assert aac.fmtp["mode"] == "AAC-hbr"
    assert (aac.fmtp["sizelength"], aac.fmtp["indexlength"], aac.fmtp["indexdeltalength"]) == ("13", "3", "3")
    assert aac.aac_config == bytes.fromhex("118856e500")  # AAC-LC, 48 kHz, mono (+ SBR sync extension)
    assert (opus.kind, opus.payload_type, opus.encoding, opus.clock_rate, opus.channels) == (
        "audio",
        97,
        "OPUS",
        48000,
        2,
    )  # RFC 7587: always opus/48000/2


@FUZZ
@given(
    st.sampled_from([H264_SDP, AAC_SDP, OPUS_SDP, LATM_SDP, RTSP_ANNOUNCE.partition(b"\r\n\r\n")[2].decode()]),
    edits,
)
@example(H264_SDP, [])
def test_fuzz_sdp_parser_from_captures(text: str, changes: list[tuple[int, int, bytes]]) -> None:
    mutated = splice(text.encode(), changes).decode("utf-8", errors="replace")
    try:
        sdp = parse_sdp(mutated)
        for media in sdp.media:
            media.sprop_parameter_sets, media.aac_config
        check_ingestible(sdp)
    except RtpError:
        pass  # refused input; any other exception fails the test


# RTP: ffmpeg's rtp muxer -------------------------------------------------------------


class Depacketizer(Protocol):
    def push(self, packet: pure_rtp.RtpPacket) -> list[AccessUnit]: ...


def check_headers(
    captured: list[bytes], parse: Callable[[bytes], pure_rtp.RtpPacket], payload_type: int
) -> list[pure_rtp.RtpPacket]:
    """One sender, consecutive sequence numbers, the SDP's payload type; both builds read the
    same fields and serialize() gives back the captured datagram."""
    packets = [parse(d) for d in captured]
    for datagram, packet in zip(captured, packets):
        assert packet.serialize() == datagram
        assert packet.fields() == pure_rtp.parse_rtp(datagram).fields()
        assert (packet.csrcs, packet.extension_profile, packet.padding) == ((), None, 0)
    assert {p.payload_type for p in packets} == {payload_type}
    assert len({p.ssrc for p in packets}) == 1
    first = packets[0].sequence
    assert [p.sequence for p in packets] == [(first + i) & 0xFFFF for i in range(len(packets))]
    return packets


def push_all(depacketizer: Depacketizer, packets: list[pure_rtp.RtpPacket]) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    for packet in packets:
        out += depacketizer.push(packet)
    return out


def avcc_nal_types(data: bytes) -> list[int]:
    types = []
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        types.append(data[pos + 4] & 0x1F)
        pos += 4 + size
    assert pos == len(data)
    return types


@both_parsers
@both_builds
def test_ffmpeg_h264_rtp(
    parse: Callable[[bytes], pure_rtp.RtpPacket], depacketizer: type[PureH264Depacketizer]
) -> None:
    packets = check_headers(H264_RTP, parse, only_media(H264_SDP).payload_type)
    payloads = [p.payload for p in packets]
    assert [p.marker for p in packets] == [False] * 6 + [True, True]
    first_ts = packets[0].timestamp
    # One timestamp per access unit. x264's default 3 B-frames: the P frame coded after the IDR
    # is shown 4 frames (at 10 fps, 9000 ticks each) later.
    assert [p.timestamp for p in packets] == [first_ts] * 7 + [(first_ts + 4 * 9000) & 0xFFFFFFFF]
    # Packet 0: STAP-A with SPS and PPS (ffmpeg sends them in band, not in the SDP).
    assert payloads[0][0] & 0x1F == STAP_A
    sps_size = int.from_bytes(payloads[0][1:3], "big")
    sps = payloads[0][3 : 3 + sps_size]
    pps_size = int.from_bytes(payloads[0][3 + sps_size : 5 + sps_size], "big")
    pps = payloads[0][5 + sps_size :]
    assert len(pps) == pps_size and (sps[0] & 0x1F, pps[0] & 0x1F) == (7, 8)
    assert (sps[1], sps[3]) == (100, 10)  # High profile, level 1.0 (64x48)
    # Packets 1-6: the IDR slice in FU-A fragments: start, continuations, end.
    fu = payloads[1:7]
    assert all(p[0] & 0x1F == FU_A and p[1] & 0x1F == 5 for p in fu)
    assert [(p[1] >> 7, p[1] >> 6 & 1) for p in fu] == [(1, 0)] + [(0, 0)] * 4 + [(0, 1)]
    # Packet 7: a P slice as a single NAL unit.
    assert payloads[7][0] & 0x1F == 1
    dep = depacketizer()
    units = push_all(dep, packets)
    assert (dep.sps, dep.pps) == (sps, pps)
    assert (dep.dropped_fragments, dep.errors) == (0, 0)
    assert [(u.timestamp, u.keyframe, avcc_nal_types(u.data)) for u in units] == [
        (packets[0].timestamp, True, [7, 8, 5]),
        (packets[7].timestamp, False, [1]),
    ]
    idr = bytes((fu[0][0] & 0xE0 | 5,)) + b"".join(p[2:] for p in fu)
    assert units[0].data.endswith(len(idr).to_bytes(4, "big") + idr)
    assert units[1].data == len(payloads[7]).to_bytes(4, "big") + payloads[7]


@both_parsers
def test_ffmpeg_aac_rtp(parse: Callable[[bytes], pure_rtp.RtpPacket]) -> None:
    media = only_media(AAC_SDP)
    packets = check_headers(AAC_RTP, parse, media.payload_type)
    assert all(p.marker for p in packets)  # RFC 3640: each packet ends an access unit
    dep = AacDepacketizer(
        int(media.fmtp["sizelength"]), int(media.fmtp["indexlength"]), int(media.fmtp["indexdeltalength"])
    )
    per_packet = [dep.push(p) for p in packets]
    assert [len(units) for units in per_packet] == [1, 1, 3, 2]
    for packet, units in zip(packets, per_packet):
        header_bits = int.from_bytes(packet.payload[:2], "big")
        assert header_bits == 16 * len(units)  # 13-bit size + 3-bit index per access unit
        assert 2 + header_bits // 8 + sum(len(u.data) for u in units) == len(packet.payload)
    units = [u for group in per_packet for u in group]
    first_ts = packets[0].timestamp
    assert [u.timestamp for u in units] == [(first_ts + 1024 * i) & 0xFFFFFFFF for i in range(7)]
    assert all(u.keyframe and u.data for u in units)
    # raw_data_block() element ids: ffmpeg's encoder opens its first frame with a fill element
    # (FIL, 6) carrying its name, then every frame holds one mono channel element (SCE, 0).
    assert units[0].data[0] >> 5 == 6 and units[0].data[3:7] == b"Lavc"
    assert all(u.data[0] >> 5 == 0 for u in units[1:])


@both_parsers
def test_ffmpeg_opus_rtp(parse: Callable[[bytes], pure_rtp.RtpPacket]) -> None:
    packets = check_headers(OPUS_RTP, parse, only_media(OPUS_SDP).payload_type)
    first_ts = packets[0].timestamp
    assert [p.timestamp for p in packets] == [(first_ts + 960 * i) & 0xFFFFFFFF for i in range(len(packets))]
    for packet in packets:
        toc = packet.payload[0]
        assert (toc >> 3, toc >> 2 & 1, toc & 3) == (31, 0, 0)  # CELT fullband 20 ms, mono, one frame
        assert opus_packet_samples(packet.payload) == 960
    units = push_all(OpusDepacketizer(), packets)
    assert [(u.timestamp, u.data) for u in units] == [(p.timestamp, p.payload) for p in packets]


@FUZZ
@given(st.sampled_from(H264_RTP + AAC_RTP + OPUS_RTP + LATM_RTP + LATM_RTP_MTU100), edits)
@example(H264_RTP[0], [])
@example(H264_RTP[0], [(0, 1, b"\xb0")])  # padding bit set, last byte as the count
def test_fuzz_rtp_parsers_from_captures(datagram: bytes, changes: list[tuple[int, int, bytes]]) -> None:
    data = splice(datagram, changes)
    for parse in PARSERS:
        try:
            packet = parse(data)
        except RtpError:
            continue  # refused input; any other exception fails the test
        assert 12 <= packet.payload_start <= packet.payload_end <= len(data)
        assert packet.fields() == pure_rtp.parse_rtp(data).fields()


def fuzz_depacketizer(
    depacketizer: Depacketizer, captured: list[bytes], index: int, changes: list[tuple[int, int, bytes]]
) -> None:
    """Replace one captured datagram's payload with a spliced one, then push them all."""
    packets = [parse_rtp(d) for d in captured]
    target = packets[index % len(packets)]
    payload = splice(target.payload, changes)
    packets[index % len(packets)] = RtpPacket(
        target.payload_type, target.sequence, target.timestamp, target.ssrc, payload, target.marker
    )
    for packet in packets:
        try:
            depacketizer.push(packet)
        except RtpError:
            pass  # refused packet (the server drops and counts it); any other exception fails the test


@FUZZ
@given(st.integers(0, len(H264_RTP) - 1), edits)
@example(0, [(1, 2, b"\xff\xff")])  # STAP-A inner size past the payload
def test_fuzz_h264_depacketizer_from_capture(index: int, changes: list[tuple[int, int, bytes]]) -> None:
    for build in H264_BUILDS:
        fuzz_depacketizer(build(), H264_RTP, index, changes)


@FUZZ
@given(st.integers(0, len(AAC_RTP) - 1), edits)
@example(2, [(0, 2, b"\xff\xff")])  # AU headers longer than the payload
def test_fuzz_aac_depacketizer_from_capture(index: int, changes: list[tuple[int, int, bytes]]) -> None:
    fuzz_depacketizer(AacDepacketizer(), AAC_RTP, index, changes)


@FUZZ
@given(st.integers(0, len(OPUS_RTP) - 1), edits)
@example(0, [(0, 4096, b"")])  # empty payload
@example(0, [(0, 2, b"\xfb\x00")])  # code-3 packet declaring zero frames
def test_fuzz_opus_depacketizer_from_capture(index: int, changes: list[tuple[int, int, bytes]]) -> None:
    fuzz_depacketizer(OpusDepacketizer(), OPUS_RTP, index, changes)


# MP4A-LATM: GStreamer's rtspclientsink (rtpmp4apay) ---------------------------------


def latm_media() -> MediaDescription:
    sdp = parse_sdp(LATM_SDP)
    check_ingestible(sdp)
    (media,) = sdp.media
    return media


def test_gstreamer_latm_sdp_gives_the_track_the_mpeg4_generic_path_gives() -> None:
    media = latm_media()
    assert (media.kind, media.payload_type, media.encoding, media.clock_rate, media.channels) == (
        "audio",
        96,
        "MP4A-LATM",
        48000,
        1,
    )
    assert media.fmtp == {"cpresent": "0", "config": LATM_MTU100_CONFIG.hex()}
    mux = media.stream_mux_config
    # audioMuxVersion 0, one program, one layer, one frame per AudioMuxElement; the
    # fields after the AudioSpecificConfig are left out (rtpmp4apay's short form).
    assert (mux.audio_mux_version, mux.sub_frames, mux.other_data_bits) == (0, 1, 0)
    assert (mux.audio.object_type, mux.audio.sample_rate, mux.audio.channels, mux.audio.frame_samples) == (
        2,
        48000,
        1,
        1024,
    )
    # GStreamer's AAC encoder here is FFmpeg's (avenc_aac): the AudioSpecificConfig inside the
    # StreamMuxConfig is the very config ffmpeg's own MPEG4-GENERIC SDP carries, sync
    # extension and padding included, so both paths publish the same track.
    aac = only_media(AAC_SDP)
    assert mux.asc == aac.aac_config == bytes.fromhex("118856e500")
    assert aac_track(mux.asc) == audio_track(aac)


def latm_frames(payload: bytes) -> list[bytes]:
    """The frames of AudioMuxElements of one subframe each, read here without the depacketizer."""
    out = []
    pos = 0
    while pos < len(payload):
        length = 0
        while payload[pos] == 255:
            length += 255
            pos += 1
        length += payload[pos]
        out.append(payload[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return out


@both_parsers
def test_gstreamer_latm_rtp(parse: Callable[[bytes], pure_rtp.RtpPacket]) -> None:
    media = latm_media()
    packets = check_headers(LATM_RTP, parse, media.payload_type)
    assert all(p.marker for p in packets)  # one whole AudioMuxElement per packet
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(packets, packets[1:])]
    assert all(abs(step - 1024) <= 1 for step in steps)  # rtpmp4apay rounds to +-1 tick
    dep = LatmDepacketizer(media.stream_mux_config)
    per_packet = [dep.push(p) for p in packets]
    assert [len(units) for units in per_packet] == [1, 1, 1, 1]
    for packet, (unit,) in zip(packets, per_packet):
        assert unit.timestamp == packet.timestamp and unit.keyframe
        assert [unit.data] == latm_frames(packet.payload)
        assert len(packet.payload) == 1 + len(unit.data)  # PayloadLengthInfo of one byte
    # As in ffmpeg's capture: a fill element with the encoder's name, then mono channel elements.
    units = [u for group in per_packet for u in group]
    assert units[0].data[0] >> 5 == 6 and units[0].data[3:7] == b"Lavc"
    assert all(u.data[0] >> 5 == 0 for u in units[1:])
    assert dep.damaged_units == 0


@both_parsers
def test_gstreamer_latm_rtp_fragmented(parse: Callable[[bytes], pure_rtp.RtpPacket]) -> None:
    """rtpmp4apay with mtu=100 splits AudioMuxElements over packets of one timestamp, the
    marker on the last; joined, they give the frames the unfragmented capture carries
    (same encoder, same input)."""
    packets = check_headers(LATM_RTP_MTU100, parse, 96)
    assert [p.marker for p in packets] == [False, True, False, True, True]
    assert packets[0].timestamp == packets[1].timestamp and packets[2].timestamp == packets[3].timestamp
    mux = parse_stream_mux_config(LATM_MTU100_CONFIG)
    units = push_all(LatmDepacketizer(mux), packets)
    whole = [u.data for u in push_all(LatmDepacketizer(mux), [parse(d) for d in LATM_RTP])]
    assert [u.data for u in units] == whole[:3]
    assert [u.timestamp for u in units] == [packets[0].timestamp, packets[2].timestamp, packets[4].timestamp]


def test_gstreamer_latm_loss_drops_only_the_element_it_hit() -> None:
    mux = parse_stream_mux_config(LATM_MTU100_CONFIG)
    packets = [parse_rtp(d) for d in LATM_RTP_MTU100]
    whole = [u.data for u in push_all(LatmDepacketizer(mux), packets)]
    for missing, kept in ((1, [1, 2]), (2, [0, 2]), (0, [1, 2]), (3, [0, 2])):
        dep = LatmDepacketizer(mux)
        out = []
        for i, packet in enumerate(packets):
            if i == missing:
                continue
            if i == missing + 1:
                dep.lost()
            out += dep.push(packet)
        assert [u.data for u in out] == [whole[k] for k in kept], missing
        assert dep.damaged_units == 1, missing


@FUZZ
@given(edits)
@example([(2, 1, b"\xff")])  # numProgram 15
@example([(4, 4096, b"")])  # cut inside the AudioSpecificConfig
def test_fuzz_stream_mux_config_from_capture(changes: list[tuple[int, int, bytes]]) -> None:
    config = splice(LATM_MTU100_CONFIG, changes)
    try:
        mux = parse_stream_mux_config(config)
    except RtpError:
        return  # refused input; any other exception fails the test
    assert isinstance(mux, StreamMuxConfig) and 1 <= mux.sub_frames <= 64 and mux.asc


@FUZZ
@given(st.integers(0, 8), edits, st.sets(st.integers(0, 8), max_size=3))
@example(0, [(0, 1, b"\xff\xff\xff")], set())  # a length continued past the payload
def test_fuzz_latm_depacketizer_from_captures(
    index: int, changes: list[tuple[int, int, bytes]], losses: set[int]
) -> None:
    """One payload spliced, some packets lost: only RtpError may escape."""
    mux = parse_stream_mux_config(LATM_MTU100_CONFIG)
    packets = [parse_rtp(d) for d in LATM_RTP + LATM_RTP_MTU100]
    target = packets[index]
    packets[index] = RtpPacket(
        target.payload_type,
        target.sequence,
        target.timestamp,
        target.ssrc,
        splice(target.payload, changes),
        target.marker,
    )
    dep = LatmDepacketizer(mux)
    for i, packet in enumerate(packets):
        if i in losses:
            dep.lost()
            continue
        try:
            for unit in dep.push(packet):
                assert 0 < len(unit.data) <= MAX_AAC_FRAME_BYTES
        except RtpError:
            pass  # refused packet (the server drops and counts it)

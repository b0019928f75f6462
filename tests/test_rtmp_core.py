"""The RTMP core with bytes only: chunk stream, AMF0, handshake, session, FLV -> frames."""

from __future__ import annotations

import pytest

from benchmarks.hostile_peers import CompressingChunkWriter, publish_sequence
from ingest.rtmp import amf0
from ingest.rtmp.chunk import (
    AUDIO,
    COMMAND_AMF0,
    SET_CHUNK_SIZE,
    VIDEO,
    ChunkLimits,
    ChunkReader,
    ChunkWriter,
    Message,
)
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.flv import AAC_RAW, AAC_SEQUENCE_HEADER, AVC_NALU, AVC_SEQUENCE_HEADER, audio_payload, video_payload
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from ingest.rtmp.session import MediaMessage, Metadata, PublishRequest, ServerSession, Unpublished
from ingest.rtmp.to_stream import RtmpToFrames
from mediacore.model.media import Kind

# A real avcC (1280x720 High 3.1, from ffmpeg/libx264) and AAC-LC 48 kHz stereo config.
AVCC = bytes.fromhex("0164001fffe1001a6764001facd9405005bb011000000300100000030320f183196001000568ebecb22c")
ASC = bytes.fromhex("1190")


def feed_all_and_bytewise(reader_factory, data: bytes) -> list[Message]:
    whole = reader_factory().feed(data)
    r = reader_factory()
    bytewise: list[Message] = []
    for i in range(len(data)):
        bytewise += r.feed(data[i : i + 1])
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload, m.csid) for m in whole] == [
        (m.type_id, m.stream_id, m.timestamp, m.payload, m.csid) for m in bytewise
    ]
    return whole


# Chunk stream ------------------------------------------------------------------------


def test_all_four_header_formats_roundtrip_whole_and_bytewise():
    w = CompressingChunkWriter(128)
    data = b""
    sent = []
    ts = 0
    for i in range(12):
        size = 300 if i % 3 else 40  # alternate sizes so fmt 1 and fmt 2/3 both occur
        payload = bytes([i]) * size
        ts += 33 if i % 4 else 40
        data += w.write(6, VIDEO, 1, ts, payload)
        sent.append((ts, payload))
    msgs = feed_all_and_bytewise(ChunkReader, data)
    assert [(m.timestamp, m.payload) for m in msgs] == sent
    assert msgs[0].stream_id == 1


def test_compressing_writer_uses_every_header_format():
    w = CompressingChunkWriter(128)
    firsts = [w.write(6, VIDEO, 1, 0, b"a" * 10)[0] >> 6]
    firsts.append(w.write(6, VIDEO, 1, 40, b"b" * 20)[0] >> 6)  # new length: fmt 1
    firsts.append(w.write(6, VIDEO, 1, 73, b"c" * 20)[0] >> 6)  # same length, new delta: fmt 2
    firsts.append(w.write(6, VIDEO, 1, 106, b"d" * 20)[0] >> 6)  # same delta: fmt 3
    assert firsts == [0, 1, 2, 3]
    r = ChunkReader()
    data = CompressingChunkWriter(128)
    stream = b"".join(
        data.write(6, VIDEO, 1, t, bytes([t % 256]) * n) for t, n in [(0, 10), (40, 20), (73, 20), (106, 20)]
    )
    assert [m.timestamp for m in r.feed(stream)] == [0, 40, 73, 106]


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
def test_chunk_stream_id_encodings(csid):
    w = ChunkWriter(128)
    data = w.write(csid, VIDEO, 1, 1000, b"x" * 300)
    (msg,) = feed_all_and_bytewise(ChunkReader, data)
    assert msg.csid == csid and msg.payload == b"x" * 300
    expected_basic = 1 if csid < 64 else 2 if csid < 320 else 3
    assert len(data) == expected_basic + 11 + 300 + 2 * expected_basic  # two continuation headers


def test_extended_timestamps_repeated_in_type3_chunks():
    w = ChunkWriter(128)
    ts = 0x01000000 + 5  # past 2^24 ms: needs the extended field
    data = w.write(4, VIDEO, 1, ts, b"a" * 400)
    (msg,) = feed_all_and_bytewise(ChunkReader, data)
    assert msg.timestamp == ts and msg.payload == b"a" * 400


def test_extended_timestamps_omitted_in_type3_chunks():
    ts = 0x01234567
    payload = b"b" * 300
    header = (
        bytes([0x04]) + b"\xff\xff\xff" + len(payload).to_bytes(3, "big") + bytes([VIDEO]) + (1).to_bytes(4, "little")
    )
    data = header + ts.to_bytes(4, "big") + payload[:128] + b"\xc4" + payload[128:256] + b"\xc4" + payload[256:]
    (msg,) = feed_all_and_bytewise(ChunkReader, data)
    assert msg.timestamp == ts and msg.payload == payload


def test_timestamp_deltas_accumulate_and_wrap_at_2_32():
    w = CompressingChunkWriter(4096)
    stamps = [0xFFFFFF00, 0xFFFFFFF0, 0x00000010, 0x00000030]  # crosses 2^32
    data = b"".join(w.write(4, AUDIO, 1, t, b"z" * 10) for t in stamps)
    msgs = feed_all_and_bytewise(ChunkReader, data)
    assert [m.timestamp for m in msgs] == stamps


def test_set_chunk_size_applies_to_the_next_chunk():
    w = ChunkWriter(128)
    data = w.write(2, SET_CHUNK_SIZE, 0, 0, (4096).to_bytes(4, "big"))
    w.chunk_size = 4096
    data += w.write(4, VIDEO, 1, 0, b"c" * 4000)
    msgs = feed_all_and_bytewise(ChunkReader, data)
    assert msgs[-1].payload == b"c" * 4000


@pytest.mark.parametrize("size,error", [(0x7FFFFFFF, "exceeds the limit"), (0, "Set Chunk Size of 0")])
def test_bad_set_chunk_size(size, error):
    data = ChunkWriter(128).write(2, SET_CHUNK_SIZE, 0, 0, size.to_bytes(4, "big"))
    with pytest.raises(RtmpError, match=error):
        ChunkReader().feed(data)


def test_message_declaring_16_mib_is_refused_before_any_body():
    header = (
        bytes([0x04]) + b"\x00\x00\x00" + (0xFFFFFF).to_bytes(3, "big") + bytes([VIDEO]) + (1).to_bytes(4, "little")
    )
    reader = ChunkReader(ChunkLimits(max_message_size=8 * 1024 * 1024))
    with pytest.raises(RtmpError, match="16777215 bytes .* exceeds the limit"):
        reader.feed(header)


def test_message_under_limit_with_no_body_allocates_nothing():
    header = (
        bytes([0x04]) + b"\x00\x00\x00" + (4_000_000).to_bytes(3, "big") + bytes([VIDEO]) + (1).to_bytes(4, "little")
    )
    reader = ChunkReader()
    assert reader.feed(header) == []
    assert reader.buffered == len(header)  # only the header bytes themselves are held


def test_type3_chunk_on_unused_chunk_stream_is_an_error():
    with pytest.raises(RtmpError, match="no previous type 0 header"):
        ChunkReader().feed(bytes([0xC0 | 9]) + b"payload")


def test_too_many_chunk_streams():
    w = ChunkWriter(128)
    data = b"".join(w.write(10 + i, VIDEO, 1, 0, b"x" * 200) for i in range(5))
    reader = ChunkReader(ChunkLimits(max_chunk_streams=3))
    with pytest.raises(RtmpError, match="more than 3 chunk streams"):
        reader.feed(data)


def test_buffered_partial_messages_are_bounded():
    w = ChunkWriter(128)
    # Many chunk streams each holding an unfinished message.
    data = b""
    for i in range(10):
        data += w.write(10 + i, VIDEO, 1, 0, b"p" * 1000)[: 12 + 128 + 2 * 129]  # first 3 chunks
    reader = ChunkReader(ChunkLimits(max_buffered_bytes=1000))
    with pytest.raises(RtmpError, match="bytes of incomplete messages"):
        for i in range(0, len(data), 100):
            reader.feed(data[i : i + 100])


# AMF0 --------------------------------------------------------------------------------


def test_amf0_roundtrip():
    values = [
        "connect",
        1.0,
        {"app": "live", "n": 2.5, "ok": True, "nested": {"a": None}},
        None,
        amf0.EcmaArray(width=1280.0, height=720.0),
        [1.0, "two"],
        "x" * 70000,
    ]
    assert amf0.decode(amf0.encode(*values), amf0.AmfLimits(max_string=100_000)) == values


def test_amf0_string_declaring_2_31_bytes():
    data = bytes([amf0.LONG_STRING]) + (2**31).to_bytes(4, "big") + b"tiny"
    with pytest.raises(RtmpError, match="exceeds the limit"):
        amf0.decode(data)
    with pytest.raises(RtmpError, match="only 4 remain"):
        amf0.decode(data, amf0.AmfLimits(max_string=2**32))


def test_amf0_100000_nested_objects():
    data = (bytes([amf0.OBJECT]) + b"\x00\x01k") * 100_000
    with pytest.raises(RtmpError, match="nesting deeper than 32"):
        amf0.decode(data)


def test_amf0_array_count_beyond_message():
    data = bytes([amf0.STRICT_ARRAY]) + (1_000_000).to_bytes(4, "big")
    with pytest.raises(RtmpError):
        amf0.decode(data)


# Handshake and session ---------------------------------------------------------------


def handshake(session: ServerSession) -> bytes:
    c0c1 = client_hello()
    out = session.receive_data(c0c1)
    assert out == []
    reply = session.data_to_send()
    assert len(reply) == 1 + 2 * HANDSHAKE_SIZE and reply[0] == 3
    assert reply[1 + HANDSHAKE_SIZE :][8:] == c0c1[1 + 8 :]  # S2 echoes C1's random bytes
    session.receive_data(reply[1 : 1 + HANDSHAKE_SIZE])
    return reply


def published_session(w: ChunkWriter | None = None, name: str = "shop1") -> tuple[ServerSession, ChunkWriter]:
    s = ServerSession()
    handshake(s)
    w = w or ChunkWriter(128)
    events = s.receive_data(publish_sequence(name, w))
    assert [type(e).__name__ for e in events] == ["Connected", "PublishRequest"]
    s.accept_publish()
    replies = [amf0.decode(m.payload) for m in ChunkReader().feed(s.data_to_send()) if m.type_id == COMMAND_AMF0]
    assert replies[0][0] == "_result" and replies[0][3]["code"] == "NetConnection.Connect.Success"
    assert replies[1][:2] == ["_result", 2.0] and replies[1][3] == 1.0
    assert replies[-1][0] == "onStatus" and replies[-1][3]["code"] == "NetStream.Publish.Start"
    return s, w


def test_publish_flow_and_media_events():
    s, w = published_session()
    data = w.write(4, 18, 1, 0, amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(width=1280.0)))
    data += w.write(6, VIDEO, 1, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, AVCC))
    data += w.write(4, AUDIO, 1, 0, audio_payload(AAC_SEQUENCE_HEADER, ASC))
    events = s.receive_data(data)
    assert isinstance(events[0], Metadata) and events[0].values["width"] == 1280.0
    assert [type(e) for e in events[1:]] == [MediaMessage, MediaMessage]
    events = s.receive_data(w.write(3, COMMAND_AMF0, 1, 0, amf0.encode("deleteStream", 4.0, None, 1.0)))
    assert isinstance(events[-1], Unpublished)


def test_publish_key_from_name_query():
    s = ServerSession()
    handshake(s)
    events = s.receive_data(publish_sequence("shop1?key=secret", ChunkWriter(128)))
    assert events[-1] == PublishRequest("shop1", "secret", "live")


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "x" * 4096, "", ".hidden"])
def test_bad_stream_names_are_refused(name):
    s = ServerSession()
    handshake(s)
    with pytest.raises(RtmpError, match="stream name"):
        s.receive_data(publish_sequence(name, ChunkWriter(128)))
    replies = [amf0.decode(m.payload) for m in ChunkReader().feed(s.data_to_send()) if m.type_id == COMMAND_AMF0]
    assert replies[-1][3]["code"] == "NetStream.Publish.BadName"


def test_command_before_connect_is_an_error():
    s = ServerSession()
    handshake(s)
    with pytest.raises(RtmpError, match="before connect"):
        s.receive_data(ChunkWriter(128).write(3, COMMAND_AMF0, 0, 0, amf0.encode("createStream", 1.0, None)))


def test_wrong_rtmp_version():
    with pytest.raises(RtmpError, match="version 6"):
        ServerSession().receive_data(b"\x06" + b"\x00" * HANDSHAKE_SIZE)


def test_ping_is_answered():
    s, w = published_session()
    s.receive_data(w.write(2, 4, 0, 0, (6).to_bytes(2, "big") + (1234).to_bytes(4, "big")))
    (msg,) = ChunkReader().feed(s.data_to_send())
    assert msg.type_id == 4 and msg.payload == (7).to_bytes(2, "big") + (1234).to_bytes(4, "big")


# FLV -> frames -------------------------------------------------------------------------


def test_frames_from_flv_tags_with_composition_time():
    conv = RtmpToFrames("t")
    tracks, _ = conv.push(VIDEO, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, AVCC), 1000.0)
    assert tracks[0].width == 1280 and tracks[0].height == 720 and tracks[0].codec_string == "avc1.64001f"
    tracks, _ = conv.push(AUDIO, 0, audio_payload(AAC_SEQUENCE_HEADER, ASC), 1000.0)
    assert tracks[0].sample_rate == 48000 and tracks[0].channels == 2
    nal = (5).to_bytes(4, "big") + b"\x65abcd"
    _, (frame,) = conv.push(VIDEO, 100, video_payload(True, AVC_NALU, 67, nal), 1000.0)
    assert (frame.dts, frame.pts, frame.keyframe) == (9000, (100 + 67) * 90, True)


@pytest.mark.parametrize("start", [0xFFFFFF - 500, 0xFFFFFFFF - 500])
def test_timestamps_crossing_2_24_and_2_32_stay_continuous(start):
    """Through the chunk layer and the unwrapper: no jump, no discontinuity."""
    s, w = published_session(CompressingChunkWriter(128))
    conv = RtmpToFrames("t")
    data = w.write(6, VIDEO, 1, start, video_payload(True, AVC_SEQUENCE_HEADER, 0, AVCC))
    data += w.write(4, AUDIO, 1, start, audio_payload(AAC_SEQUENCE_HEADER, ASC))
    nal = (5).to_bytes(4, "big") + b"\x65abcd"
    for i in range(60):
        ts = (start + i * 33) & 0xFFFFFFFF
        data += w.write(6, VIDEO, 1, ts, video_payload(i == 0, AVC_NALU, 0, nal))
        data += w.write(
            4, AUDIO, 1, (start + round(i * 1024 / 48)) & 0xFFFFFFFF, audio_payload(AAC_RAW, b"\x21\x00")
        )  # 21.33 ms frames, rounded
    frames = []
    for ev in s.receive_data(data):
        if isinstance(ev, MediaMessage):
            frames += conv.push(ev.type_id, ev.timestamp, ev.payload, 0.0)[1]
    video = [f.dts for f in frames if f.kind is Kind.VIDEO]
    audio = [f.dts for f in frames if f.kind is Kind.AUDIO]
    assert len(video) == 60 and len(audio) == 60
    assert all(b - a == 33 * 90 for a, b in zip(video, video[1:]))
    assert all(b - a == 1024 for a, b in zip(audio, audio[1:]))
    assert video[0] == start * 90


def test_unsupported_codecs_are_ignored_not_fatal():
    conv = RtmpToFrames("t")
    assert conv.push(VIDEO, 0, bytes([0x12, 0, 0, 0, 0]), 0.0) == ([], [])  # H.263
    assert conv.push(AUDIO, 0, bytes([0x2F, 0]), 0.0) == ([], [])  # MP3
    assert conv.counters.ignored == 2


def test_bad_sequence_header_is_an_rtmp_error():
    with pytest.raises(RtmpError, match="bad AVC sequence header"):
        RtmpToFrames("t").push(VIDEO, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, b"\x01\x02"), 0.0)

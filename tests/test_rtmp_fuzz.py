"""Random and mutated bytes into the RTMP core: only RtmpError may escape."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.rtmp import amf0
from ingest.rtmp.chunk import AUDIO, VIDEO, ChunkLimits, ChunkReader, ChunkWriter
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.flv import AAC_RAW, AAC_SEQUENCE_HEADER, AVC_NALU, AVC_SEQUENCE_HEADER, audio_payload, video_payload
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from ingest.rtmp.session import MediaMessage, ServerSession
from ingest.rtmp.to_stream import RtmpToFrames

from rtmp_client import publish_sequence
from test_rtmp_core import ASC, AVCC

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_session_bytes() -> bytes:
    """A whole publishing session as a client sends it (after the handshake)."""
    w = ChunkWriter(128, compress=True)
    data = publish_sequence("fuzz", w)
    data += w.write(6, VIDEO, 1, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, AVCC))
    data += w.write(4, AUDIO, 1, 0, audio_payload(AAC_SEQUENCE_HEADER, ASC))
    for i in range(6):
        nal = (5).to_bytes(4, "big") + b"\x65" + bytes(range(i, i + 200))
        data += w.write(6, VIDEO, 1, i * 33, video_payload(i == 0, AVC_NALU, 66, nal))
        data += w.write(4, AUDIO, 1, i * 21, audio_payload(AAC_RAW, b"\x21" * 30))
    return data


SEED = valid_session_bytes()


def run_session(data: bytes, chunks: list[int] | None = None) -> None:
    session = ServerSession()
    session.receive_data(client_hello())
    s1 = session.data_to_send()[1 : 1 + HANDSHAKE_SIZE]
    session.receive_data(s1)
    conv = RtmpToFrames("fuzz")
    pos = 0
    sizes = chunks or [len(data)]
    try:
        for size in sizes * (len(data) // max(1, sum(sizes)) + 1):
            piece = data[pos : pos + size]
            pos += size
            for event in session.receive_data(piece):
                if getattr(event, "name", None) and type(event).__name__ == "PublishRequest":
                    session.accept_publish()
                if isinstance(event, MediaMessage):
                    conv.push(event.type_id, event.timestamp, event.payload, 0.0)
            if pos >= len(data):
                break
    except RtmpError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_after_handshake(data):
    run_session(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=12),
       st.lists(st.integers(1, 300), min_size=1, max_size=5))
def test_mutated_valid_sessions(mutations, chunk_sizes):
    data = bytearray(SEED)
    for index, value in mutations:
        data[index] = value
    run_session(bytes(data), chunk_sizes)


@FUZZ
@given(st.binary(max_size=2048))
def test_chunk_reader_random(data):
    reader = ChunkReader(ChunkLimits(max_message_size=65536, max_buffered_bytes=1 << 20))
    try:
        reader.feed(data)
    except RtmpError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_amf0_random(data):
    try:
        amf0.decode(data)
    except RtmpError:
        pass


@FUZZ
@given(st.binary(max_size=512), st.booleans())
def test_flv_tags_random(body, video):
    conv = RtmpToFrames("fuzz")
    conv.push(VIDEO, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, AVCC), 0.0)
    conv.push(AUDIO, 0, audio_payload(AAC_SEQUENCE_HEADER, ASC), 0.0)
    try:
        conv.push(VIDEO if video else AUDIO, 10, body, 0.0)
    except RtmpError:
        pass


def test_seed_session_is_valid():
    """The fuzzing seed itself parses into media without error."""
    run_session(SEED)

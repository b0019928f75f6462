"""Random and mutated bytes into the RTMP core: only RtmpError may escape.

The runner replays a session the way an encoder sends it: the command flight (connect ..
publish) first and the media only after the server has accepted the publish. ffmpeg, OBS and
GStreamer all wait for NetStream.Publish.Start before sending media, and the session passes
media on only after accept_publish(), so media fed in the same call as the publish would be
dropped and the media path (FLV tags -> frames) never reached.

For mutated input an RtmpError is an expected outcome and anything else fails the test. The
unmutated seed never runs under that guard: a seed that stops parsing must fail loudly, not
be counted as "input the server rightly refused".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from test_rtmp_core import ASC, AVCC

from benchmarks.hostile_peers import CompressingChunkWriter, publish_sequence
from ingest.rtmp import amf0
from ingest.rtmp.chunk import AUDIO, VIDEO, ChunkLimits, ChunkReader
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.flv import AAC_RAW, AAC_SEQUENCE_HEADER, AVC_NALU, AVC_SEQUENCE_HEADER, audio_payload, video_payload
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from ingest.rtmp.session import Connected, Event, MediaMessage, PublishRequest, ServerSession
from ingest.rtmp.to_stream import RtmpToFrames

if TYPE_CHECKING:
    from mediacore.model.media import Frame, Track

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEED_NAME = "fuzz"
SEED_FRAMES = 6  # video and audio frames each, after the two sequence headers


def seed_flights() -> tuple[bytes, bytes]:
    """A whole publishing session as a client sends it after the handshake, in its two
    flights: the commands through `publish`, then (after NetStream.Publish.Start) the media."""
    w = CompressingChunkWriter(128)
    commands = publish_sequence(SEED_NAME, w)
    media = w.write(6, VIDEO, 1, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, AVCC))
    media += w.write(4, AUDIO, 1, 0, audio_payload(AAC_SEQUENCE_HEADER, ASC))
    for i in range(SEED_FRAMES):
        nal = (5).to_bytes(4, "big") + b"\x65" + bytes(range(i, i + 200))
        media += w.write(6, VIDEO, 1, i * 33, video_payload(i == 0, AVC_NALU, 66, nal))
        media += w.write(4, AUDIO, 1, i * 21, audio_payload(AAC_RAW, b"\x21" * 30))
    return commands, media


SEED_COMMANDS, SEED_MEDIA = seed_flights()
SEED = SEED_COMMANDS + SEED_MEDIA


@dataclass
class Replay:
    """What one replayed session produced: session events, then tracks and frames from them."""

    events: list[Event] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)


def pieces(data: bytes, sizes: list[int], flight_end: int) -> Iterator[bytes]:
    """Cut `data` into reads of the given sizes (cycled), none of them across `flight_end`."""
    pos = 0
    turn = 0
    while pos < len(data):
        end = min(pos + sizes[turn % len(sizes)], len(data))
        if pos < flight_end < end:
            end = flight_end
        yield data[pos:end]
        pos = end
        turn += 1


def run_session(data: bytes, chunks: list[int] | None = None, flight_end: int = len(SEED_COMMANDS)) -> Replay:
    """Handshake, then `data` in reads of `chunks` bytes (default: one read per flight),
    accepting the publish as the server shell does. RtmpError propagates to the caller."""
    session = ServerSession()
    assert session.receive_data(client_hello()) == []
    s1 = session.data_to_send()[1 : 1 + HANDSHAKE_SIZE]
    assert session.receive_data(s1) == [] and session.state == "connecting"
    conv = RtmpToFrames(SEED_NAME)
    replay = Replay()
    for piece in pieces(data, chunks or [len(data)], flight_end):
        for ev in session.receive_data(piece):
            replay.events.append(ev)
            if isinstance(ev, PublishRequest):
                session.accept_publish()
            elif isinstance(ev, MediaMessage):
                tracks, frames = conv.push(ev.type_id, ev.timestamp, ev.payload, 0.0)
                replay.tracks += tracks
                replay.frames += frames
    return replay


def run_untrusted(data: bytes, chunks: list[int] | None = None) -> Replay | None:
    """Mutated or random input: it parses, or it is refused with an RtmpError that says why.
    Any other exception is a bug in the core and propagates to fail the test."""
    try:
        return run_session(data, chunks)
    except RtmpError as e:
        assert str(e), "an RtmpError must carry a message for the log"
        event("refused with RtmpError")
        return None


def check_seed_replay(replay: Replay) -> None:
    """The seed really publishes: connect, the named publish, then every media message
    reaching the frame converter."""
    kinds = [type(ev) for ev in replay.events]
    assert kinds == [Connected, PublishRequest] + [MediaMessage] * (2 + 2 * SEED_FRAMES)
    assert replay.events[0] == Connected("live", "rtmp://h/live", "")
    assert replay.events[1] == PublishRequest(SEED_NAME, "", "live")
    assert [(t.codec, t.width, t.height, t.sample_rate, t.channels) for t in replay.tracks] == [
        ("h264", 1280, 720, 0, 0),
        ("aac", 0, 0, 48000, 2),
    ]
    video = [f for f in replay.frames if f.track.codec == "h264"]
    audio = [f for f in replay.frames if f.track.codec == "aac"]
    assert len(video) == len(audio) == SEED_FRAMES
    assert [f.keyframe for f in video] == [True] + [False] * (SEED_FRAMES - 1)
    assert [f.dts for f in video] == [i * 33 * 90 for i in range(SEED_FRAMES)]


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_after_handshake(data: bytes) -> None:
    run_untrusted(data)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(SEED) - 1), st.integers(0, 255)), max_size=12),
    st.lists(st.integers(1, 300), min_size=1, max_size=5),
)
@example(mutations=[], chunk_sizes=[1])
@example(mutations=[], chunk_sizes=[7, 128, 300])
def test_mutated_valid_sessions(mutations: list[tuple[int, int]], chunk_sizes: list[int]) -> None:
    data = bytearray(SEED)
    for index, value in mutations:
        data[index] = value
    if bytes(data) == SEED:  # no mutation took effect: it must parse, whatever the read sizes
        check_seed_replay(run_session(SEED, chunk_sizes))
        return
    run_untrusted(bytes(data), chunk_sizes)


@FUZZ
@given(st.binary(max_size=2048))
def test_chunk_reader_random(data: bytes) -> None:
    reader = ChunkReader(ChunkLimits(max_message_size=65536, max_buffered_bytes=1 << 20))
    try:
        reader.feed(data)
    except RtmpError:
        pass  # refused input; any other exception fails the test


@FUZZ
@given(st.binary(max_size=512))
def test_amf0_random(data: bytes) -> None:
    try:
        amf0.decode(data)
    except RtmpError:
        pass  # refused input; any other exception fails the test


@FUZZ
@given(st.binary(max_size=512), st.booleans())
def test_flv_tags_random(body: bytes, video: bool) -> None:
    conv = RtmpToFrames("fuzz")
    conv.push(VIDEO, 0, video_payload(True, AVC_SEQUENCE_HEADER, 0, AVCC), 0.0)  # valid: outside the guard
    conv.push(AUDIO, 0, audio_payload(AAC_SEQUENCE_HEADER, ASC), 0.0)
    try:
        conv.push(VIDEO if video else AUDIO, 10, body, 0.0)
    except RtmpError:
        pass  # refused input; any other exception fails the test


@pytest.mark.parametrize("chunks", [None, [1], [7, 128, 300], [len(SEED_COMMANDS) + 5]])
def test_seed_session_is_valid(chunks: list[int] | None) -> None:
    """The fuzzing seed parses into a publish and media frames, however it is cut into reads;
    if it stopped doing so, the mutations above would no longer reach the media path."""
    replay = run_session(SEED, chunks)
    check_seed_replay(replay)
    assert replay.events == run_session(SEED).events

"""Hostile and malformed RTMP peers against a live server, while a healthy ffmpeg stream is
pushed at the same time: each bad session is closed with one clear log line, memory does
not grow with what the peer declared, and the healthy stream loses no frame."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc

import pytest
from conftest import count_packets, ffmpeg_push_cmd, require_tool, start_process, stop_process, until, wait_for_playlist

from benchmarks.hostile_peers import ScriptedPublisher, publish_sequence
from ingest.rtmp import amf0
from ingest.rtmp.chunk import COMMAND_AMF0, SET_CHUNK_SIZE, VIDEO, ChunkWriter
from mediacore.model.media import Kind

pytestmark = pytest.mark.slow
MEMORY_BOUND = 8 * 1024 * 1024  # far below every size the bad peers declare (16 MiB .. 2 GiB)


def connect_command(body_values: bytes) -> bytes:
    return ChunkWriter(128).write(3, COMMAND_AMF0, 0, 0, body_values)


def raw_header(csid: int, length: int, type_id: int) -> bytes:
    return bytes([csid]) + b"\x00\x00\x00" + length.to_bytes(3, "big") + bytes([type_id]) + (1).to_bytes(4, "little")


CASES: list[tuple[str, str, object]] = [
    (
        "set chunk size 2^31-1",
        "Set Chunk Size 2147483647 exceeds the limit of 65536",
        ChunkWriter(128).write(2, SET_CHUNK_SIZE, 0, 0, (0x7FFFFFFF).to_bytes(4, "big")),
    ),
    (
        "set chunk size 0",
        "Set Chunk Size of 0 is invalid",
        ChunkWriter(128).write(2, SET_CHUNK_SIZE, 0, 0, (0).to_bytes(4, "big")),
    ),
    (
        "16 MiB message header, no body",
        "message of 16777215 bytes on chunk stream 4 exceeds the limit",
        raw_header(4, 0xFFFFFF, VIDEO),
    ),
    (
        "type 3 chunk on unused chunk stream",
        "chunk stream 9: format 3 header with no previous type 0 header",
        bytes([0xC0 | 9]) + b"\x00" * 64,
    ),
    (
        "AMF string declaring 2^31 bytes",
        "AMF0 long string of 2147483648 bytes exceeds the limit",
        connect_command(amf0.encode("connect", 1.0) + bytes([amf0.LONG_STRING]) + (2**31).to_bytes(4, "big") + b"x"),
    ),
    (
        "100,000 nested AMF objects",
        "AMF0 nesting deeper than 32",
        connect_command(amf0.encode("connect", 1.0) + (bytes([amf0.OBJECT]) + b"\x00\x01k") * 100_000),
    ),
    (
        "AMF array declaring 2^31 items",
        "AMF0 strict array declares 2147483648 items",
        connect_command(amf0.encode("connect", 1.0) + bytes([amf0.STRICT_ARRAY]) + (2**31).to_bytes(4, "big")),
    ),
    (
        "4 KiB stream name",
        "stream name of 4096 characters exceeds the limit of 128",
        publish_sequence("n" * 4096, ChunkWriter(128)),
    ),
    (
        "stream name with ../",
        "stream name '../../etc/passwd' is not allowed",
        publish_sequence("../../etc/passwd", ChunkWriter(128)),
    ),
    ("connect to another app", "connect to unknown app 'admin'", publish_sequence("x", ChunkWriter(128), app="admin")),
]


async def expect_closed(engine, caplog, payload: bytes, expected: str) -> None:
    client = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
    await client.connect()
    client.send(payload)
    assert await client.closed_by_server(5.0), f"server kept the connection open (expected: {expected})"
    await client.close()

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "mediacore.rtmp" and "closed:" in r.getMessage()]

    await until(lambda: any(expected in line for line in lines()), 5, f"a log line with {expected!r} ({lines()[-3:]})")


@pytest.fixture
def config(config):
    config.rtmp.handshake_timeout = 1.0
    config.rtmp.idle_timeout = 2.0
    return config


async def test_bad_peers_are_closed_and_a_healthy_stream_loses_nothing(engine, clip, caplog):
    require_tool("ffmpeg")
    caplog.set_level(logging.INFO)
    expected = count_packets(clip)
    assert expected["video"] >= 300 and expected["audio"] >= 400
    healthy = await start_process(*ffmpeg_push_cmd(clip, f"rtmp://127.0.0.1:{engine.rtmp_port}/live/healthy"))
    tracemalloc.start()
    try:
        await wait_for_playlist(engine.http_port, "healthy", segments=1)
        for label, message, payload in CASES:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            await expect_closed(engine, caplog, payload, message)
            _, peak = tracemalloc.get_traced_memory()
            assert peak - base < MEMORY_BOUND, f"{label}: memory grew by {(peak - base) >> 20} MiB"

        # A second publisher for a live name gets a clear BadName status, then is closed.
        second = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await second.connect()
        status = await second.publish("healthy")
        assert status[3]["code"] == "NetStream.Publish.BadName"
        assert await second.closed_by_server()
        await second.close()

        # Chunk stream ids 64 and 65599 are legal: a session using them publishes fine.
        edge = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await edge.connect()
        w = ChunkWriter(128)
        edge.send(w.write(64, COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"})))
        edge.send(w.write(65599, COMMAND_AMF0, 0, 0, amf0.encode("createStream", 2.0, None)))
        edge.send(w.write(65599, COMMAND_AMF0, 1, 0, amf0.encode("publish", 3.0, None, "edgeids", "live")))
        status = await edge.wait_for_status()
        assert status[3]["code"] == "NetStream.Publish.Start"
        await edge.close()

        # A socket that never completes the handshake, and one that goes quiet, are timed out.
        silent = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        silent.reader, silent.writer = await asyncio.open_connection("127.0.0.1", engine.rtmp_port)
        assert await silent.closed_by_server(3.0)
        await silent.close()
        quiet = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await quiet.connect()
        await quiet.publish("quiet")
        assert await quiet.closed_by_server(4.0)
        await quiet.close()
        log_lines = " ".join(r.getMessage() for r in caplog.records if r.name == "mediacore.rtmp")
        assert "handshake not completed within 1 s" in log_lines
        assert "idle timeout 2 s" in log_lines

        assert await asyncio.wait_for(healthy.wait(), 30) == 0, "the healthy ffmpeg push failed"
    finally:
        tracemalloc.stop()
        await stop_process(healthy)

    stream = engine.hub.get("healthy")
    assert stream.stats.frames[Kind.VIDEO] == expected["video"]
    assert stream.stats.frames[Kind.AUDIO] == expected["audio"]
    assert sum(s.dropped for s in stream.subscribers) == 0

"""Hostile RTMP peers beside a healthy ffmpeg stream: a socket that never publishes, a flood
of connections from one address, a peer that never reads, a publish/unpublish loop, a
flood of new stream names, and a flood of pings and other control messages. Each is closed
or refused with a clear log line and counted; the healthy stream's playlist keeps answering
and loses nothing (tests/hostile.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from conftest import until
from hostile import HealthyStream

from benchmarks.hostile_peers import ScriptedPublisher, ping
from ingest.rtmp import amf0
from ingest.rtmp.chunk import ACKNOWLEDGEMENT, COMMAND_AMF0, USER_CONTROL, VIDEO, ChunkWriter
from ingest.rtmp.config import PEER_SEND_BUFFER, RtmpConfig
from ingest.rtmp.errors import RtmpError
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from ingest.rtmp.server import session_limits
from ingest.rtmp.session import USER_PING_REQUEST, ServerSession
from mediacore.model.rate import TokenBucket

pytestmark = pytest.mark.slow


def closed_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mediacore.rtmp" and text in r.getMessage()]


async def test_a_socket_that_never_publishes_is_closed_at_the_deadline(engine, healthy_clip, caplog):
    engine.config.rtmp.publish_deadline = 1.0
    async with HealthyStream(engine, healthy_clip) as healthy:
        idle = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await idle.connect()
        connect = amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
        idle.send(idle.chunks.write(3, COMMAND_AMF0, 0, 0, connect))
        for i in range(10):  # alive and talking, but never publishing
            idle.send(
                idle.chunks.write(2, USER_CONTROL, 0, 0, USER_PING_REQUEST.to_bytes(2, "big") + i.to_bytes(4, "big"))
            )
        assert await idle.closed_by_server(5.0)
        await idle.close()
        await healthy.check()
    assert closed_lines(caplog, "no publish within 1 s of connecting")


async def test_connections_past_the_per_address_cap_are_refused(engine, healthy_clip, caplog):
    engine.config.rtmp.max_connections_per_ip = 4  # the healthy ffmpeg holds one
    async with HealthyStream(engine, healthy_clip) as healthy:
        peers = [await asyncio.open_connection("127.0.0.1", engine.rtmp_port) for _ in range(8)]
        closed = 0
        for reader, _ in peers:
            try:
                closed += await asyncio.wait_for(reader.read(1), 1.0) == b""
            except (TimeoutError, ConnectionError):
                pass
        assert closed == 5, closed  # 3 admitted beside the healthy stream, 5 refused
        assert engine.rtmp.refused == 5
        for _, writer in peers:
            writer.close()
        await healthy.check()
    assert closed_lines(caplog, "refused: 4 connections from 127.0.0.1 (limit 4)")


async def test_a_peer_that_never_reads_is_closed(engine, healthy_clip, caplog):
    engine.config.rtmp.max_write_buffer = 64 * 1024
    engine.config.rtmp.max_control_messages_per_second = 0  # the pings must reach the write cap
    async with HealthyStream(engine, healthy_clip) as healthy:
        deaf = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await deaf.connect()
        deaf.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        deaf.reader._transport.pause_reading()  # type: ignore[attr-defined]  # a client that never reads
        ping = deaf.chunks.write(2, USER_CONTROL, 0, 0, USER_PING_REQUEST.to_bytes(2, "big") + bytes(4))
        connect = deaf.chunks.write(3, COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"}))
        deaf.send(connect)
        local = deaf.writer.get_extra_info("sockname")
        await until(lambda: any(c.peer == f"{local[0]}:{local[1]}" for c in engine.rtmp.connections), 5, "accept")
        (ours,) = [c for c in engine.rtmp.connections if c.peer == f"{local[0]}:{local[1]}"]
        # The kernel holds little for a peer that never reads (Linux reports twice what was set).
        sent = ours.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert sent == 2 * PEER_SEND_BUFFER, sent
        began = time.monotonic()
        try:
            for _ in range(20000):  # each ping asks for an 18-byte reply: up to 180 MB of replies
                deaf.send(ping * 512)
                await deaf.writer.drain()
                await asyncio.sleep(0)
                if closed_lines(caplog, "peer does not read"):
                    break
        except ConnectionError:
            pass
        await until(lambda: bool(closed_lines(caplog, "peer does not read")), 10, "the deaf peer being closed")
        print(f"the deaf peer was closed {time.monotonic() - began:.2f} s after its first ping")
        deaf.writer.close()
        await healthy.check()


async def test_a_publish_loop_on_one_connection_stops_at_the_limit(engine, healthy_clip, caplog):
    limit = engine.config.rtmp.max_publishes_per_connection
    async with HealthyStream(engine, healthy_clip) as healthy:
        looper = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await looper.connect()
        status = await looper.publish("loop0")
        assert status[3]["code"] == "NetStream.Publish.Start"
        refused = None
        for i in range(1, limit + 2):
            looper.send(
                looper.chunks.write(8, COMMAND_AMF0, 1, 0, amf0.encode("FCUnpublish", 0.0, None, f"loop{i - 1}"))
            )
            looper.send(
                looper.chunks.write(8, COMMAND_AMF0, 1, 0, amf0.encode("publish", 0.0, None, f"loop{i}", "live"))
            )
            try:
                status = await looper.wait_for_status()
            except ConnectionError:
                refused = i
                break
            if status[3]["code"] != "NetStream.Publish.Start":
                refused = i
                assert status[3]["code"] == "NetStream.Publish.Rejected"
                break
        assert refused == limit, refused  # the limit-th republish is publish number limit + 1
        assert await looper.closed_by_server()
        await looper.close()
        await healthy.check()
    assert closed_lines(caplog, f"publish number {limit + 1} on one connection (limit {limit})")
    assert sum(1 for name in engine.hub.streams if name.startswith("loop")) == limit


async def test_new_stream_names_past_the_hub_limit_are_refused(engine, healthy_clip, caplog):
    caplog.set_level(logging.INFO, logger="mediacore.rtmp")
    engine.config.hub.max_streams = 3  # the healthy stream and two more
    async with HealthyStream(engine, healthy_clip) as healthy:
        codes = []
        for i in range(4):
            peer = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
            await peer.connect()
            try:
                codes.append((await peer.publish(f"many{i}"))[3]["code"])
            except ConnectionError:
                codes.append("closed")
            await peer.close()
        assert codes[:2] == ["NetStream.Publish.Start"] * 2
        assert codes[2:] == ["NetStream.Publish.BadName"] * 2, codes
        await healthy.check()
    assert closed_lines(caplog, "the server holds 3 streams (limit 3)")


# Control-message flood ------------------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=8, burst=4)  # times below are exact binary fractions
    assert all(bucket.take(100.0) for _ in range(4))  # the burst, at once
    assert not bucket.take(100.0)
    assert bucket.take(100.125) and not bucket.take(100.125)  # 1/8 s at 8/s: one more
    assert not bucket.take(100.0625)  # time going backwards adds nothing
    assert all(bucket.take(200.0 + i / 8) for i in range(100))  # refilled; at the rate, always allowed
    assert sum(bucket.take(300.0 + i / 1024) for i in range(1000)) == 4 + 7  # the burst, then 8/s
    assert all(TokenBucket(rate=0, burst=1).take(0.0) for _ in range(1000))  # rate 0: no bound


def handshaken(config: RtmpConfig) -> tuple[ServerSession, ChunkWriter]:
    session = ServerSession(session_limits(config))
    session.receive_data(client_hello(), 0.0)
    s0s1s2 = session.data_to_send()
    session.receive_data(s0s1s2[1 : 1 + HANDSHAKE_SIZE], 0.0)
    writer = ChunkWriter(128)
    session.receive_data(writer.write(3, COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"})), 0.0)
    return session, writer


def test_the_session_closes_a_control_flood_but_not_media_or_a_steady_rate():
    config = RtmpConfig(max_control_messages_per_second=10, control_message_burst=20)
    session, writer = handshaken(config)  # connect took one token
    for i in range(200):  # 10 per second for 20 s: at the rate, never closed
        session.receive_data(ping(writer, i), 1.0 + i / 10)
    with pytest.raises(RtmpError, match="control message flood: .* more than 10 per second after a burst of 20"):
        session.receive_data(b"".join(ping(writer, i) for i in range(21)), 30.0)

    session, writer = handshaken(config)
    publish = amf0.encode("createStream", 2.0, None)
    session.receive_data(writer.write(3, COMMAND_AMF0, 0, 0, publish), 0.0)
    events = session.receive_data(writer.write(8, COMMAND_AMF0, 1, 0, amf0.encode("publish", 3.0, None, "s")), 0.0)
    assert events
    session.accept_publish()
    media = writer.write(6, VIDEO, 1, 0, bytes([0x17, 1, 0, 0, 0]) + bytes(10))
    events = session.receive_data(media * 5000, 0.0)  # media of the published stream is not counted
    assert len(events) == 5000 and session.control_messages == 3
    ack = writer.write(2, ACKNOWLEDGEMENT, 0, 0, bytes(4))
    with pytest.raises(RtmpError, match="control message flood"):  # a publisher's own control flood is
        session.receive_data(ack * 50, 0.0)


async def test_a_control_message_flood_is_closed_and_counted(engine, healthy_clip, caplog):
    async with HealthyStream(engine, healthy_clip) as healthy:
        flooder = ScriptedPublisher("127.0.0.1", engine.rtmp_port)
        await flooder.connect()
        status = await flooder.publish("flood")  # a publisher whose control messages flood
        assert status[3]["code"] == "NetStream.Publish.Start"
        sent = 0
        try:
            for _ in range(2000):
                flooder.send(b"".join(ping(flooder.chunks, sent + i) for i in range(50)))
                flooder.send(flooder.chunks.write(2, ACKNOWLEDGEMENT, 0, 0, sent.to_bytes(4, "big")) * 10)
                sent += 60
                await flooder.writer.drain()
                await asyncio.sleep(0)
                if closed_lines(caplog, "control message flood"):
                    break
        except ConnectionError:
            pass
        assert await flooder.closed_by_server()
        await flooder.close()
        ffmpeg = [c for c in engine.rtmp.connections if c.session.stream_name == healthy.name]
        assert ffmpeg and ffmpeg[0].session.control_messages < 20, "ffmpeg's own control traffic"
        await healthy.check()
    assert closed_lines(caplog, "control message flood")
    assert engine.metrics.registry.get_sample_value("mediacore_ingest_errors_total", {"protocol": "rtmp"}) == 1
    assert "flood" not in engine.hub.streams or not engine.hub.streams["flood"].publishing

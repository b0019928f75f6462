"""Hostile and malformed RTSP peers against a live server while real ffmpeg publishes over
RTSP (TCP interleaved) at the same time: every bad packet is dropped and counted with a
clear log line, every bad session is refused or closed, and the healthy stream loses no
frame."""

from __future__ import annotations

import asyncio
import logging
import struct

import aiohttp
import pytest
from conftest import count_packets, ffmpeg_push_cmd, require_tool, start_process, stop_process, until, wait_for_playlist
from test_rtp_depacketize import FFMPEG_SDP
from test_rtsp_core import request

from benchmarks.hostile_peers import RtspClient
from ingest.rtp.packet import RtpPacket
from ingest.rtp.rtsp import interleaved
from mediacore.model.media import Kind

pytestmark = pytest.mark.slow


def rtp(seq: int, payload: bytes, marker: bool = False) -> bytes:
    return RtpPacket(96, seq, 9000 * seq, 0xBADC0DE, payload, marker).serialize()


BAD_RTP = [
    # extension header declaring 100 words after a 12-byte header, in a 24-byte datagram
    (
        bytes([0x90, 96]) + bytes(10) + struct.pack(">HH", 0xBEDE, 100) + bytes(8),
        "RTP extension of 400 bytes runs past the packet",
    ),
    (bytes([0x8F, 96]) + bytes(18), "CSRC count 15 needs 72 bytes, the packet has 20"),
    (bytes([0xA0, 96]) + bytes(10) + b"\x00\x00\xc8", "RTP padding of 200 bytes is longer than the payload"),
]
BAD_RTCP = (bytes([0x80, 200]) + struct.pack(">H", 100) + bytes(4), "RTCP length 404 runs past the datagram")
# Valid RTP headers around bad H.264 payloads: the depacketizer refuses them.
FU_A_WITHOUT_START = (rtp(1000, bytes([0x7C, 0x05]) + bytes(50)), "FU-A fragment whose start was never seen")
STAP_A_TRUNCATED = (
    rtp(1001, bytes([0x78, 0x00, 0x50]) + bytes(10), marker=True),
    "STAP-A inner NAL unit declares 80 bytes, 10 remain",
)


def logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records if r.name == "mediacore.rtsp")


async def scrape(engine) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{engine.admin_port}/metrics") as resp:
            return await resp.text()


async def test_bad_rtsp_peers_are_closed_and_a_healthy_rtsp_stream_loses_nothing(engine, clip, caplog):
    require_tool("ffmpeg")
    caplog.set_level(logging.INFO, logger="mediacore.rtsp")
    engine.config.rtsp.record_timeout = 1.0
    expected = count_packets(clip)
    base = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/"
    rtsp_tcp = ["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp"]
    healthy = await start_process(*ffmpeg_push_cmd(clip, base + "healthy", output=rtsp_tcp))
    try:
        await wait_for_playlist(engine.http_port, "healthy", segments=1)

        # Taking over a live stream name is refused; the connection itself is harmless.
        thief = await RtspClient(engine.rtsp_port).open()
        reply = await thief.call("ANNOUNCE", base + "healthy", "Content-Type: application/sdp\r\n", FFMPEG_SDP.encode())
        assert reply.startswith("RTSP/1.0 453"), reply
        thief.close()

        # A publisher that records, then sends broken packets over its interleaved channels.
        hostile = await RtspClient(engine.rtsp_port).open()
        assert (
            await hostile.call("ANNOUNCE", base + "hostile", "Content-Type: application/sdp\r\n", FFMPEG_SDP.encode())
        ).startswith("RTSP/1.0 200")
        reply = await hostile.call(
            "SETUP", base + "hostile/streamid=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\r\n"
        )
        session = next(
            line.split(":", 1)[1].split(";")[0].strip() for line in reply.split("\r\n") if line.startswith("Session:")
        )
        await hostile.call(
            "SETUP",
            base + "hostile/streamid=1",
            f"Transport: RTP/AVP/TCP;unicast;interleaved=2-3;mode=record\r\nSession: {session}\r\n",
        )
        assert (await hostile.call("RECORD", base + "hostile", f"Session: {session}\r\n")).startswith("RTSP/1.0 200")
        for data, _ in BAD_RTP:
            hostile.send(interleaved(0, data))
        hostile.send(interleaved(1, BAD_RTCP[0]))
        hostile.send(interleaved(0, FU_A_WITHOUT_START[0]) + interleaved(0, STAP_A_TRUNCATED[0]))
        hostile.send(interleaved(9, b"on a channel nobody set up"))
        await hostile.writer.drain()
        expected_lines = [message for _, message in [*BAD_RTP, BAD_RTCP, FU_A_WITHOUT_START, STAP_A_TRUNCATED]]
        await until(lambda: all(logged(caplog, m) for m in expected_lines), 5, "log lines for every bad packet")
        video = next(r for name, r in engine.rtsp.track_receivers() if name == "hostile" and r.media.kind == "video")
        counts = video.counters()
        assert (counts["bad"], counts["bad_rtcp"], counts["orphan_fragment"]) == (4, 1, 1), counts
        metrics = await scrape(engine)
        assert 'mediacore_rtp_packets_total{event="bad",media="video",stream="hostile"} 4.0' in metrics
        assert 'mediacore_rtp_packets_total{event="bad",media="video",stream="healthy"} 0.0' in metrics
        # Bytes that are neither a request nor an interleaved frame end the session.
        hostile.send(b"GARBAGE\r\n\r\n")
        assert await hostile.closed_by_server()
        assert logged(caplog, "[hostile]: closed: malformed RTSP request line")
        hostile.close()

        # Limits on the text protocol: a 64 KiB request line, absurd SDP, a session without RECORD.
        for payload, message in [
            (b"OPTIONS rtsp://h/" + b"a" * 65536, "request line longer than 4096"),
            (
                request("ANNOUNCE", base + "absurd", 1, "", b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/0\r\n"),
                "absurd",
            ),
            (request("ANNOUNCE", base + "idle", 1, "", FFMPEG_SDP.encode()), "no RECORD within 1 s"),
        ]:
            peer = await RtspClient(engine.rtsp_port).open()
            peer.send(payload)
            assert await peer.closed_by_server(), message
            assert logged(caplog, message), f"no log line with {message!r}"
            peer.close()
        assert 'mediacore_ingest_errors_total{protocol="rtsp"} 4.0' in await scrape(engine)

        assert await asyncio.wait_for(healthy.wait(), 30) == 0, "the healthy ffmpeg push failed"
    finally:
        await stop_process(healthy)
    stream = engine.hub.get("healthy")
    # TEARDOWN flushes the reorder window a moment later.
    await until(lambda: stream.stats.frames[Kind.VIDEO] >= expected["video"], 5, "the last frames after TEARDOWN")
    assert stream.stats.frames[Kind.VIDEO] == expected["video"]
    assert expected["audio"] - 1 <= stream.stats.frames[Kind.AUDIO] <= expected["audio"]
    assert sum(s.dropped for s in stream.subscribers) == 0
    assert engine.hub.get("hostile") is None or not engine.hub.get("hostile").publishing

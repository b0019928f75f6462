"""RTSP framing and the publish session, sans-I/O; plus a live session that never records."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_rtp_depacketize import FFMPEG_SDP

from benchmarks.hostile_peers import rtsp_request as request
from ingest.rtp.errors import RtpError
from ingest.rtp.rtsp import Interleaved, Request, RtspParser, interleaved
from ingest.rtp.session import RtspSession


def test_parser_whole_and_bytewise_with_interleaved_frames():
    data = (
        request("OPTIONS", "rtsp://h/live/x", 1)
        + interleaved(0, b"rtp!")
        + request("ANNOUNCE", "rtsp://h/live/x", 2, "Content-Type: application/sdp\r\n", b"v=0\r\n")
    )
    whole = RtspParser().feed(data)
    parser = RtspParser()
    bytewise = [item for i in range(len(data)) for item in parser.feed(data[i : i + 1])]
    assert whole == bytewise
    assert isinstance(whole[1], Interleaved) and whole[1].data == b"rtp!"
    assert isinstance(whole[2], Request) and whole[2].body == b"v=0\r\n" and whole[2].cseq == "2"


@pytest.mark.parametrize(
    "data,message",
    [
        (b"OPTIONS rtsp://h/" + b"a" * 65536, "request line longer than 4096"),
        (b"OPTIONS rtsp://h/ RTSP/1.0\r\n" + b"X-Pad: " + b"b" * 20000, "headers longer than 16384"),
        (request("ANNOUNCE", "rtsp://h/live/x", 1, "Content-Length: 99999999\r\n"), "body of 99999999 bytes"),
        (b"GARBAGE\r\n\r\n", "malformed RTSP request line"),
    ],
)
def test_parser_limits(data, message):
    with pytest.raises(RtpError, match=message):
        RtspParser().feed(data)


class PublishSession(RtspSession):
    """A session whose pending ANNOUNCE is decided at once: refused (401) unless the key is k."""

    def handle(self, req: Request) -> bytes:
        reply = super().handle(req)
        if self.pending is not None:
            return self.decide_announce() if self.pending.key == "k" else self.decide_announce(401, "Unauthorized")
        return reply


def publish_session() -> RtspSession:
    ports = iter([(30000, 30001), (30002, 30003)])
    return PublishSession(lambda: next(ports))


def test_publish_flow_udp_and_tcp():
    s = publish_session()
    ok = s.handle(RtspParser().feed(request("ANNOUNCE", "rtsp://h/live/cam?key=k", 2, "", FFMPEG_SDP.encode()))[0])
    assert ok.startswith(b"RTSP/1.0 200") and s.stream_name == "cam"
    r = s.handle(
        RtspParser().feed(
            request(
                "SETUP",
                "rtsp://h/live/cam/streamid=0",
                3,
                "Transport: RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record\r\n",
            )
        )[0]
    )
    assert b"server_port=30000-30001" in r and b"Session: " in r
    early = s.handle(RtspParser().feed(request("RECORD", "rtsp://h/live/cam", 4))[0])
    assert early.startswith(b"RTSP/1.0 455")  # not every media is set up yet
    r = s.handle(
        RtspParser().feed(
            request(
                "SETUP",
                "rtsp://h/live/cam/streamid=1",
                5,
                "Transport: RTP/AVP/TCP;unicast;interleaved=2-3;mode=record\r\n",
            )
        )[0]
    )
    assert b"interleaved=2-3" in r
    assert s.handle(RtspParser().feed(request("RECORD", "rtsp://h/live/cam", 6))[0]).startswith(b"RTSP/1.0 200")
    assert s.recording and s.tracks[0].client_ports == (5000, 5001) and s.tracks[1].tcp


@pytest.mark.parametrize(
    "uri,sdp,message",
    [
        ("rtsp://h/live/../etc", FFMPEG_SDP, "is not allowed"),
        ("rtsp://h/other/cam", FFMPEG_SDP, "publish to rtsp://HOST/live/STREAM"),
        ("rtsp://h/live/cam", "m=video 0 RTP/AVP 96\na=rtpmap:96 VP8/90000\n", "VP8 is not supported"),
        ("rtsp://h/live/cam", "m=video 0 RTP/AVP 96\na=rtpmap:96 H264/0\n", "absurd"),
    ],
)
def test_bad_announces(uri, sdp, message):
    with pytest.raises(RtpError, match=message):
        publish_session().handle(RtspParser().feed(request("ANNOUNCE", uri, 1, "", sdp.encode()))[0])


def test_a_refused_announce_never_repeats_the_publish_key():
    with pytest.raises(RtpError) as refused:
        publish_session().handle(
            RtspParser().feed(request("ANNOUNCE", "rtsp://h/admin/cam?key=s3cret", 1, "", FFMPEG_SDP.encode()))[0]
        )
    assert "s3cret" not in str(refused.value) and "/admin/cam" in str(refused.value)


def test_wrong_key_is_refused():
    s = publish_session()
    r = s.handle(RtspParser().feed(request("ANNOUNCE", "rtsp://h/live/cam?key=no", 1, "", FFMPEG_SDP.encode()))[0])
    assert r.startswith(b"RTSP/1.0 401") and s.closed


async def test_a_session_that_never_records_is_closed(engine, caplog):
    engine.config.rtsp.record_timeout = 1.0
    caplog.set_level(logging.WARNING, logger="mediacore.rtsp")
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.rtsp_port)
    writer.write(request("ANNOUNCE", "rtsp://h/live/idle", 1, "", FFMPEG_SDP.encode()))
    await writer.drain()
    assert (await reader.readline()).startswith(b"RTSP/1.0 200")
    assert await asyncio.wait_for(reader.read(), 5) is not None  # the server closes the connection
    assert any("no RECORD within 1 s" in r.getMessage() for r in caplog.records)
    writer.close()
    # A hostile request line on another connection is refused and closed too.
    reader, writer = await asyncio.open_connection("127.0.0.1", engine.rtsp_port)
    writer.write(b"OPTIONS rtsp://h/" + b"a" * 65536)
    await writer.drain()
    await asyncio.wait_for(reader.read(), 5)
    assert any("request line longer than 4096" in r.getMessage() for r in caplog.records)
    writer.close()

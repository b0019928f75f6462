"""Hostile RTSP and RTP peers beside a healthy ffmpeg stream (tests/hostile.py), and the
sans-I/O rules that stop them.

- Strangers' datagrams aimed at an RTSP/UDP session's ports or at a raw RTP input (another
  host, another port of the sender's host, another SSRC) are dropped and counted as
  `foreign`; they neither reach the stream nor learn where RTCP replies go.
- SETUP's Transport is validated (461 for channels past 255, odd pairs, ports out of range)
  and binds one UDP port pair per track (a repeated SETUP is refused with 455).
- An exception in the session timer closes the session with a logged error instead of
  silently stopping its timeouts.
- Connections that have not published cost no periodic timer; a peer that never reads is
  closed at max_write_buffer; connections past max_connections(_per_ip) are refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct

import psutil
import pytest
from conftest import (
    RecordingPublisher,
    count_packets,
    ffmpeg_push_cmd,
    start_process,
    stop_process,
    until,
    wait_for_playlist,
)
from hostile import HealthyStream
from impair import ffmpeg_sdp, free_udp_pair
from test_rtp_depacketize import FFMPEG_SDP
from test_rtsp_bad_input import scrape
from test_rtsp_core import request

from benchmarks.hostile_peers import RtspClient, session_of
from ingest.rtp.config import SOURCE_SILENCE
from ingest.rtp.packet import RtpPacket
from ingest.rtp.receiver import SourceLock, TrackReceiver
from ingest.rtp.rtsp import RtspParser, interleaved
from ingest.rtp.sdp import parse_sdp
from ingest.rtp.server import RtspConnection
from ingest.rtp.session import RtspSession
from ingest.rtp.to_stream import SessionClock
from mediacore.model.media import Kind

STRANGER_SSRC = 0x0BADC0DE
IDR = bytes([0x65, 0x88, 0x84]) + bytes(60)  # an IDR slice NAL unit: injected, it would be a keyframe
AAC = struct.pack(">HH", 16, 20 << 3) + bytes(20)  # one AAC-hbr AU header and a 20-byte frame


def rtp(payload_type: int, seq: int, payload: bytes, ssrc: int = STRANGER_SSRC) -> bytes:
    return RtpPacket(payload_type, seq & 0xFFFF, (seq * 3000) & 0xFFFFFFFF, ssrc, payload, True).serialize()


def sender_report(ssrc: int = STRANGER_SSRC) -> bytes:
    return struct.pack(">BBHIIIIII", 0x80, 200, 6, ssrc, 3_900_000_000, 0, 12345, 1, 100)


def rtsp_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mediacore.rtsp" and text in r.getMessage()]


# Sans-I/O: the SETUP Transport rules ----------------------------------------------------


def announced(allocated: list[tuple[int, int]] | None = None) -> RtspSession:
    pairs = allocated if allocated is not None else []

    def allocate() -> tuple[int, int]:
        pairs.append((30000 + 2 * len(pairs), 30001 + 2 * len(pairs)))
        return pairs[-1]

    s = RtspSession(allocate)
    s.handle(RtspParser().feed(request("ANNOUNCE", "rtsp://h/live/cam", 1, "", FFMPEG_SDP.encode()))[0])
    assert s.decide_announce().startswith(b"RTSP/1.0 200")
    assert s.sdp is not None
    return s


def setup(s: RtspSession, media: int, transport: str | None) -> bytes:
    header = f"Transport: {transport}\r\n" if transport is not None else ""
    return s.handle(RtspParser().feed(request("SETUP", f"rtsp://h/live/cam/streamid={media}", 2, header))[0])


@pytest.mark.parametrize(
    "transport,why",
    [
        ("RTP/AVP/TCP;unicast;interleaved=0-300;mode=record", "interleaved channels 0-300"),
        ("RTP/AVP/TCP;unicast;interleaved=256-257;mode=record", "interleaved channels 256-257"),
        ("RTP/AVP/TCP;unicast;interleaved=1-2;mode=record", "interleaved channels 1-2"),
        ("RTP/AVP/TCP;unicast;interleaved=0-3;mode=record", "interleaved channels 0-3"),
        ("RTP/AVP/TCP;unicast;interleaved=255;mode=record", "interleaved channels 255-256"),
        ("RTP/AVP/TCP;unicast;interleaved=-1-0;mode=record", "is not a number or a range"),
        ("RTP/AVP/TCP;unicast;interleaved=zero;mode=record", "is not a number or a range"),
        ("RTP/AVP;unicast;client_port=0-1;mode=record", "client ports 0-1 out of 1-65535"),
        ("RTP/AVP;unicast;client_port=65535;mode=record", "client ports 65535-65536"),
        ("RTP/AVP;unicast;client_port=70000-70001;mode=record", "client ports 70000-70001"),
        ("RTP/AVP;unicast;client_port=123456-123457", "is not a number or a range"),
        ("RTP/AVP;unicast;mode=record", "without client_port"),
        ("RTP/AVP;multicast;client_port=5000-5001;mode=record", "multicast"),
        ("RTP/AVP;unicast;client_port=5000-5001;mode=play", "mode=play"),
        ("RTP/SAVP;unicast;client_port=5000-5001;mode=record", "is not RTP/AVP"),
        (None, "is not RTP/AVP"),
    ],
)
def test_setup_refuses_a_transport_it_cannot_take_with_461(transport, why):
    allocated: list[tuple[int, int]] = []
    s = announced(allocated)
    reply = setup(s, 0, transport)
    assert reply.startswith(b"RTSP/1.0 461 Unsupported Transport"), reply
    assert why in s.refusal, s.refusal
    assert s.tracks == {} and allocated == []  # nothing bound for a refused SETUP


@pytest.mark.parametrize(
    "transport,granted",
    [
        ("RTP/AVP/TCP;unicast;interleaved=254-255;mode=record", "interleaved=254-255"),
        ("RTP/AVP/TCP;unicast;interleaved=6;mode=record", "interleaved=6-7"),  # one channel: RTCP on the next
        ("RTP/AVP/TCP;unicast;mode=record", "interleaved=0-1"),
        ("RTP/AVP;unicast;client_port=65534-65535;mode=record", "client_port=65534-65535"),
        ("RTP/AVP/UDP;unicast;client_port=5000", "client_port=5000-5001"),
        # Alternatives in the client's order: the first one this server takes wins.
        ('RTP/AVP;unicast;client_port=0-1,RTP/AVP/TCP;unicast;interleaved=4-5;mode="RECORD"', "interleaved=4-5"),
    ],
)
def test_setup_grants_what_real_clients_ask_for(transport, granted):
    s = announced()
    reply = setup(s, 0, transport)
    assert reply.startswith(b"RTSP/1.0 200"), reply
    assert granted.encode() in reply


def test_one_udp_port_pair_per_track_and_no_setup_after_record():
    allocated: list[tuple[int, int]] = []
    s = announced(allocated)
    udp = "RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record"
    assert setup(s, 0, udp).startswith(b"RTSP/1.0 200")
    for _ in range(50):  # each repeated SETUP used to bind another pair
        assert setup(s, 0, udp).startswith(b"RTSP/1.0 455"), "a repeated SETUP of a media is refused"
    assert allocated == [(30000, 30001)] and s.refusals == 50
    assert "media 0 is already set up" in s.refusal
    assert setup(s, 1, "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record").startswith(b"RTSP/1.0 200")
    assert s.handle(RtspParser().feed(request("RECORD", "rtsp://h/live/cam", 3))[0]).startswith(b"RTSP/1.0 200")
    assert setup(s, 1, "RTP/AVP/TCP;unicast;interleaved=2-3;mode=record").startswith(b"RTSP/1.0 455")
    assert s.tracks[1].channels == (0, 1)


def test_two_tcp_tracks_never_share_interleaved_channels():
    s = announced()
    assert setup(s, 0, "RTP/AVP/TCP;unicast;interleaved=2-3;mode=record").startswith(b"RTSP/1.0 200")
    reply = setup(s, 1, "RTP/AVP/TCP;unicast;interleaved=2-3;mode=record")
    assert reply.startswith(b"RTSP/1.0 461") and "already in use" in s.refusal
    reply = setup(s, 1, "RTP/AVP/TCP;unicast;mode=record")  # the server picks: the next free pair
    assert reply.startswith(b"RTSP/1.0 200") and s.tracks[1].channels == (4, 5), reply


# Sans-I/O: the source and SSRC locks ----------------------------------------------------


def test_rtsp_source_lock_takes_the_client_host_only_and_the_port_it_first_sends_from():
    lock = SourceLock("10.0.0.1")
    assert not lock.admit(("10.0.0.2", 5000), 0.0)  # a stranger never locks it, even first
    assert lock.admit(("10.0.0.1", 5000), 0.0)
    assert not lock.admit(("10.0.0.1", 5002), 0.1)  # another port of the client's host
    assert lock.admit(("10.0.0.1", 5000), 1.0)
    assert not lock.admit(("10.0.0.1", 5002), 1.0 + SOURCE_SILENCE - 0.01)
    assert not lock.admit(("10.0.0.2", 5000), 100.0)  # another host, however long the silence
    assert lock.admit(("10.0.0.1", 5002), 1.0 + SOURCE_SILENCE)  # the client restarted its sender
    assert lock.address == ("10.0.0.1", 5002)


def test_raw_source_lock_learns_the_first_sender_and_relearns_after_silence():
    lock = SourceLock()
    sender, stranger = ("10.0.0.1", 5000), ("10.0.0.9", 5000)
    assert lock.admit(sender, 0.0)
    assert not lock.admit(stranger, 0.5)
    assert lock.admit(sender, 1.0)
    assert not lock.admit(stranger, 1.0 + SOURCE_SILENCE - 0.01)
    assert lock.admit(stranger, 1.0 + SOURCE_SILENCE)  # the first sender went away: the input is free again
    assert not lock.admit(sender, 1.0 + SOURCE_SILENCE + 0.1)


def test_rtcp_lock_follows_the_rtp_source():
    rtp_lock = SourceLock()
    rtcp_lock = SourceLock(leader=rtp_lock)
    sender_rtcp = ("10.0.0.1", 5001)
    assert rtcp_lock.admit(sender_rtcp, 0.0)  # ffmpeg's first report comes before its first packet
    assert rtp_lock.admit(("10.0.0.1", 5000), 0.01)
    assert rtcp_lock.current == sender_rtcp
    assert not rtcp_lock.admit(("10.0.0.9", 5001), 0.02)  # another host
    assert not rtcp_lock.admit(("10.0.0.1", 7777), 60.0)  # another port of its host, however long the silence
    assert rtcp_lock.current == sender_rtcp
    # A stranger's report heard before the RTP is forgotten once the RTP comes from elsewhere.
    rtp_lock, rtcp_lock = SourceLock(), SourceLock()
    rtcp_lock.leader = rtp_lock
    assert rtcp_lock.admit(("10.0.0.9", 9), 0.0)
    assert rtp_lock.admit(("10.0.0.1", 5000), 0.01)
    assert rtcp_lock.current is None  # nothing is sent to the stranger
    assert rtcp_lock.admit(("10.0.0.1", 5001), 0.02) and rtcp_lock.current == ("10.0.0.1", 5001)
    # The sender restarts on new ports after a silence: its old RTCP port is forgotten.
    assert rtp_lock.admit(("10.0.0.1", 6000), 10.0)
    assert rtcp_lock.current is None
    assert rtcp_lock.admit(("10.0.0.1", 6001), 10.5) and rtcp_lock.current == ("10.0.0.1", 6001)


def test_receiver_drops_strangers_and_foreign_ssrcs_and_counts_them():
    media = parse_sdp(FFMPEG_SDP).media[0]
    rtp_lock = SourceLock("10.0.0.1")
    receiver = TrackReceiver(
        media,
        RecordingPublisher(),
        "test",
        SessionClock(),
        1,
        rtp_source=rtp_lock,
        rtcp_source=SourceLock(leader=rtp_lock),
    )
    sender, ssrc = ("10.0.0.1", 5000), 0xAAAA
    assert receiver.on_rtp(rtp(96, 1, IDR, ssrc), 0.0, 0.0, sender)
    assert not receiver.on_rtp(rtp(96, 2, IDR, ssrc), 0.01, 0.0, ("10.0.0.2", 5000))  # another host
    assert not receiver.on_rtp(rtp(96, 2, IDR, ssrc), 0.01, 0.0, ("10.0.0.1", 5002))  # another port
    assert not receiver.on_rtp(rtp(96, 9000, IDR), 0.02, 0.0, sender)  # another SSRC while the sender's is live
    assert receiver.on_rtp(rtp(96, 2, IDR, ssrc), 0.03, 0.0, sender)
    assert (receiver.jitter.received, receiver.jitter.resyncs, receiver.ssrc) == (2, 0, ssrc)
    assert receiver.counters()["foreign"] == 3
    # RTCP: only from the sender's host, then only from the port its first report came from.
    assert not receiver.on_rtcp(sender_report(ssrc), 0.04, ("10.0.0.2", 5001))
    assert receiver.on_rtcp(sender_report(ssrc), 0.04, ("10.0.0.1", 5001)) and receiver.sender_reports == 1
    assert not receiver.on_rtcp(sender_report(ssrc), 0.05, ("10.0.0.1", 6001))
    assert receiver.counters()["foreign"] == 5 and receiver.sender_reports == 1
    # Over TCP (no address) the SSRC lock still holds; once the sender's SSRC has been
    # silent for SOURCE_SILENCE a new one takes over (an encoder that restarted).
    assert not receiver.on_rtp(rtp(96, 9001, IDR), 0.06, 0.0)
    later = 0.03 + SOURCE_SILENCE + 0.001
    assert receiver.on_rtp(rtp(96, 9002, IDR), later, 0.0, sender)
    assert receiver.ssrc == STRANGER_SSRC and receiver.jitter.resyncs == 1
    assert receiver.counters()["foreign"] == 6


# Live: strangers beside an RTSP/UDP publisher and a raw RTP input -----------------------


class Stranger(asyncio.DatagramProtocol):
    """A UDP peer that sends what it is told and records whatever comes back."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.sent: dict[int, int] = {}  # destination port -> datagrams sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))

    def send(self, data: bytes, port: int) -> None:
        self.transport.sendto(data, ("127.0.0.1", port))
        self.sent[port] = self.sent.get(port, 0) + 1


async def strangers() -> list[Stranger]:
    """One on another host (127.0.0.2) and one on the sender's host, from another port."""
    loop = asyncio.get_running_loop()
    out = []
    for host in ("127.0.0.2", "127.0.0.1"):
        _, protocol = await loop.create_datagram_endpoint(Stranger, local_addr=(host, 0))
        out.append(protocol)
    return out


async def inject(peers: list[Stranger], ports: dict[str, tuple[int, int]], seconds: float) -> None:
    """Every 10 ms, from each stranger: an IDR slice and an AAC frame of a foreign SSRC with
    sequence numbers far from the sender's, and a sender report, to each RTP / RTCP port."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    seq = 30000
    while loop.time() < end:
        for peer in peers:
            peer.send(rtp(96, seq, IDR), ports["video"][0])
            peer.send(rtp(97, seq, AAC), ports["audio"][0])
            for kind in ("video", "audio"):
                peer.send(sender_report(), ports[kind][1])
        seq += 1
        await asyncio.sleep(0.01)
    for peer in peers:
        peer.transport.close()


def foreign_counts(metrics: str, stream: str) -> dict[str, float]:
    found = re.findall(
        rf'mediacore_rtp_packets_total{{event="foreign",media="(\w+)",stream="{stream}"}} (\S+)', metrics
    )
    return {media: float(n) for media, n in found}


async def test_strangers_cannot_inject_into_an_rtsp_udp_session(engine, clip, long_healthy_clip, caplog):
    caplog.set_level(logging.INFO, logger="mediacore.rtsp")
    expected = count_packets(clip)
    url = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/victim"
    async with HealthyStream(engine, long_healthy_clip) as healthy:
        victim = await start_process(
            *ffmpeg_push_cmd(clip, url, output=["-c", "copy", "-f", "rtsp", "-rtsp_transport", "udp"])
        )
        try:
            await wait_for_playlist(engine.http_port, "victim", segments=1)
            conn = next(c for c in engine.rtsp.connections if c.session.stream_name == "victim")
            assert conn.session.sdp is not None
            ports = {conn.session.sdp.media[i].kind: t.server_ports for i, t in conn.session.tracks.items()}
            receivers = {r.media.kind: r for r in conn.receivers.values()}
            peers = await strangers()
            await inject(peers, ports, 3.0)
            metrics = await scrape(engine)
            for kind, receiver in receivers.items():
                sent = sum(p.sent.get(ports[kind][0], 0) + p.sent.get(ports[kind][1], 0) for p in peers)
                assert receiver.counters()["foreign"] == sent, (kind, receiver.counters(), sent)
                assert receiver.jitter.resyncs == 0 and receiver.ssrc != STRANGER_SSRC
            assert foreign_counts(metrics, "victim") == {
                kind: receivers[kind].counters()["foreign"] for kind in receivers
            }, metrics
            assert all(p.received == [] for p in peers), "RTCP went to a stranger"
            assert await asyncio.wait_for(victim.wait(), 30) == 0, "the victim's ffmpeg push failed"
        finally:
            await stop_process(victim)
        await healthy.check()
    stream = engine.hub.get("victim")
    await until(lambda: stream.stats.frames[Kind.VIDEO] >= expected["video"], 5, "the victim's last frames")
    assert stream.stats.frames[Kind.VIDEO] == expected["video"]  # nothing injected, nothing lost
    assert expected["audio"] - 1 <= stream.stats.frames[Kind.AUDIO] <= expected["audio"]
    lines = rtsp_lines(caplog, "dropped a datagram from a foreign source")
    assert any("RTP from 127.0.0.2:" in line for line in lines), lines
    assert any("RTCP from 127.0.0.1:" in line for line in lines), lines
    assert len(lines) <= 2 * 2 * 16, "foreign datagrams are logged at 1..10, 16, 32, ... per track"


async def test_strangers_cannot_inject_into_or_redirect_a_raw_rtp_input(
    engine, clip, long_healthy_clip, caplog, tmp_path
):
    caplog.set_level(logging.INFO, logger="mediacore.rtsp")
    engine.config.rtp.input_timeout = 2.0  # unpublish (and flush) soon after the sender stops
    expected = count_packets(clip)
    ports = {"video": free_udp_pair(), "audio": free_udp_pair()}
    text = ffmpeg_sdp(clip, tmp_path)
    text = re.sub(r"^m=(video|audio) \d+", lambda m: f"m={m.group(1)} {ports[m.group(1)]}", text, flags=re.M)
    rtp_input = await engine.add_rtp_input("raw", parse_sdp(text))
    outputs = []
    for kind, stream_spec in (("video", "0:v"), ("audio", "0:a")):
        outputs += ["-map", stream_spec, "-c", "copy", "-f", "rtp", f"rtp://127.0.0.1:{ports[kind]}"]
    async with HealthyStream(engine, long_healthy_clip) as healthy:
        sender = await start_process(*ffmpeg_push_cmd(clip, "", output=outputs))
        try:
            await wait_for_playlist(engine.http_port, "raw", segments=1)
            receivers = {rtp_input.sdp.media[i].kind: r for i, r in rtp_input.receivers.items()}
            peers = await strangers()
            pairs = {kind: (port, port + 1) for kind, port in ports.items()}
            await inject(peers, pairs, 3.0)
            await asyncio.sleep(1.5)  # receiver reports (1 s) and NACKs would have gone out by now
            metrics = await scrape(engine)
            for kind, receiver in receivers.items():
                sent = sum(p.sent.get(pairs[kind][0], 0) + p.sent.get(pairs[kind][1], 0) for p in peers)
                assert receiver.counters()["foreign"] == sent, (kind, receiver.counters(), sent)
                assert receiver.jitter.resyncs == 0 and receiver.ssrc != STRANGER_SSRC
            assert foreign_counts(metrics, "raw") == {kind: r.counters()["foreign"] for kind, r in receivers.items()}
            assert all(p.received == [] for p in peers), "a stranger received the input's RTCP"
            assert await asyncio.wait_for(sender.wait(), 30) == 0, "the raw RTP sender failed"
        finally:
            await stop_process(sender)
        await healthy.check()
    stream = engine.hub.get("raw")
    await until(lambda: not stream.publishing, 10, "the raw input unpublishing after its timeout")
    assert rtp_input.sessions == 1  # the strangers neither reset nor republished the input
    assert stream.stats.frames[Kind.VIDEO] == expected["video"]
    assert expected["audio"] - 1 <= stream.stats.frames[Kind.AUDIO] <= expected["audio"]
    lines = rtsp_lines(caplog, "dropped a datagram from a foreign source")
    assert any("RTP from 127.0.0.2:" in line for line in lines), lines


# Live: the RTSP session and its listener ------------------------------------------------


async def recording_publisher(engine, name: str) -> RtspClient:
    """An RTSP client that ANNOUNCEs, SETs UP both media over TCP and RECORDs."""
    base = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/{name}"
    client = await RtspClient(engine.rtsp_port).open()
    sdp = "Content-Type: application/sdp\r\n"
    assert (await client.call("ANNOUNCE", base, sdp, FFMPEG_SDP.encode())).startswith("RTSP/1.0 200")
    reply = await client.call("SETUP", base + "/streamid=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
    session = f"Session: {session_of(reply)}\r\n"
    await client.call("SETUP", base + "/streamid=1", "Transport: RTP/AVP/TCP;unicast;interleaved=2-3\r\n" + session)
    assert (await client.call("RECORD", base, session)).startswith("RTSP/1.0 200")
    return client


def udp_sockets() -> int:
    return len(psutil.Process().net_connections(kind="udp"))


async def test_bad_transports_are_refused_and_a_repeated_setup_binds_nothing(engine, healthy_clip, caplog):
    base = f"rtsp://127.0.0.1:{engine.rtsp_port}/live/setups"
    async with HealthyStream(engine, healthy_clip) as healthy:
        client = await RtspClient(engine.rtsp_port).open()
        sdp = "Content-Type: application/sdp\r\n"
        assert (await client.call("ANNOUNCE", base, sdp, FFMPEG_SDP.encode())).startswith("RTSP/1.0 200")
        # Channel 300 does not fit the byte after '$': it used to be accepted, then raise in
        # the session timer the first time RTCP went out, which stopped the session's timeouts.
        for transport in ("RTP/AVP/TCP;unicast;interleaved=0-300", "RTP/AVP;unicast;client_port=0-70000"):
            reply = await client.call("SETUP", base + "/streamid=0", f"Transport: {transport};mode=record\r\n")
            assert reply.startswith("RTSP/1.0 461 Unsupported Transport"), reply
        before = udp_sockets()
        udp = "Transport: RTP/AVP/UDP;unicast;client_port=5000-5001;mode=record\r\n"
        assert (await client.call("SETUP", base + "/streamid=0", udp)).startswith("RTSP/1.0 200")
        for _ in range(200):
            reply = await client.call("SETUP", base + "/streamid=0", udp)
            assert reply.startswith("RTSP/1.0 455"), reply
        assert udp_sockets() - before == 2, "one RTP/RTCP pair for the track, however many SETUPs"
        client.close()
        await healthy.check()
    assert rtsp_lines(caplog, "SETUP refused: SETUP of media 0: interleaved channels 0-300")
    assert rtsp_lines(caplog, "SETUP refused: media 0 is already set up")
    assert len(rtsp_lines(caplog, "SETUP refused")) <= 16, "refusals are logged at 1..10, 16, 32, ..."


async def test_an_exception_in_the_session_timer_closes_the_session_with_a_logged_error(engine, healthy_clip, caplog):
    async with HealthyStream(engine, healthy_clip) as healthy:
        client = await recording_publisher(engine, "crashing")
        conn = next(c for c in engine.rtsp.connections if c.session.stream_name == "crashing")
        receiver = conn.receivers[0]

        def broken_tick(now: float, wall: float) -> list[bytes]:
            raise RuntimeError("a bug in the RTCP policy")

        receiver.tick = broken_tick  # type: ignore[method-assign]
        client.send(interleaved(0, rtp(96, 1, IDR, 0x1234)))
        assert await client.closed_by_server(3.0), "the session lived on without its timer"
        client.close()
        await healthy.check()
    lines = rtsp_lines(caplog, "[crashing]: closed: internal error in the session timer")
    assert lines and "a bug in the RTCP policy" in lines[0], lines
    record = next(r for r in caplog.records if "internal error in the session timer" in r.getMessage())
    assert record.levelno == logging.ERROR and record.exc_info is not None  # with its traceback
    assert 'mediacore_ingest_errors_total{protocol="rtsp"} 1.0' in await scrape(engine)
    assert engine.hub.get("crashing") is None or not engine.hub.get("crashing").publishing


async def test_connections_that_have_not_recorded_cost_no_periodic_timer(engine, healthy_clip, caplog, monkeypatch):
    engine.config.rtsp.record_timeout = 2.0
    ticks = 0
    original = RtspConnection._tick

    def counted(self: RtspConnection) -> None:
        nonlocal ticks
        ticks += 1
        original(self)

    monkeypatch.setattr(RtspConnection, "_tick", counted)
    async with HealthyStream(engine, healthy_clip) as healthy:
        idle = [await RtspClient(engine.rtsp_port).open() for _ in range(15)]
        for client in idle:
            assert (await client.call("OPTIONS", "*")).startswith("RTSP/1.0 200")
        await asyncio.sleep(1.0)
        assert ticks == 0, f"{ticks} ticks for 15 connections that never recorded"  # 50 Hz each, before
        closed = await asyncio.gather(*(client.closed_by_server(3.0) for client in idle))
        assert all(closed), "the RECORD deadline still closes them"
        for client in idle:
            client.close()
        # A session that records gets its timer (packets, RTCP, the idle timeout) from RECORD on.
        publisher = await recording_publisher(engine, "ticking")
        await until(lambda: ticks > 10, 2, "the recording session's timer")
        publisher.close()
        await healthy.check()
    assert len(rtsp_lines(caplog, "closed: no RECORD within 2 s")) == 15


async def test_a_peer_that_never_reads_is_closed_at_max_write_buffer(engine, healthy_clip, caplog):
    limit = engine.config.rtsp.max_write_buffer
    async with HealthyStream(engine, healthy_clip) as healthy:
        deaf = await RtspClient(engine.rtsp_port, receive_buffer=4096).open()
        deaf.reader._transport.pause_reading()  # type: ignore[attr-defined]  # a client that never reads
        options = b"OPTIONS * RTSP/1.0\r\n\r\n" * 500  # 11 KB of requests, 60 KB of replies
        rss = psutil.Process().memory_info().rss
        try:
            for _ in range(2000):  # up to 120 MB of replies
                deaf.send(options)
                await deaf.writer.drain()
                await asyncio.sleep(0.001)
                if rtsp_lines(caplog, "peer does not read"):
                    break
        except ConnectionError:
            pass
        await until(lambda: bool(rtsp_lines(caplog, "peer does not read")), 10, "the deaf peer being closed")
        grown = psutil.Process().memory_info().rss - rss
        deaf.close()
        await healthy.check()
    line = rtsp_lines(caplog, "peer does not read")[0]
    assert f"(limit {limit})" in line, line
    assert engine.rtsp.unread_closed == 1 and not engine.rtsp.connections
    assert grown < 3 * limit + 16 * 2**20, f"memory grew by {grown / 2**20:.0f} MiB"
    assert 'mediacore_ingest_errors_total{protocol="rtsp"} 1.0' in await scrape(engine)


async def refused_at_once(client: RtspClient) -> bool:
    """Whether the server closed a fresh connection before answering anything."""
    try:
        client.send(request("OPTIONS", "*", 1))
        return await asyncio.wait_for(client.reader.read(1), 1.0) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_connections_past_the_caps_are_refused_and_counted(engine, healthy_clip, caplog):
    engine.config.rtsp.max_connections_per_ip = 3
    engine.config.rtsp.max_connections = 5
    port = engine.rtsp_port
    async with HealthyStream(engine, healthy_clip) as healthy:
        first = [await RtspClient(port).open() for _ in range(4)]  # from 127.0.0.1
        assert [await refused_at_once(c) for c in first] == [False, False, False, True]
        others = [await RtspClient(port, local_host="127.0.0.2").open() for _ in range(3)]
        assert [await refused_at_once(c) for c in others] == [False, False, True]  # the 6th open: total cap
        assert engine.rtsp.refused == 2 and len(engine.rtsp.connections) == 5
        for client in first + others:
            client.close()
        await until(lambda: not engine.rtsp.connections, 5, "the connections closing")
        again = await RtspClient(port).open()  # closed ones no longer count
        assert not await refused_at_once(again)
        again.close()
        await healthy.check()
    assert rtsp_lines(caplog, "refused: 3 connections from 127.0.0.1 (limit 3) (1 refused so far)")
    assert rtsp_lines(caplog, "refused: 5 connections open (limit 5) (2 refused so far)")
    assert 'mediacore_ingest_errors_total{protocol="rtsp"} 2.0' in await scrape(engine)

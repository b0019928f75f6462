"""The asyncio shell around the RTSP/RTP core: the RTSP TCP connection (with interleaved
RTP), the UDP sockets of each track, and the hand-off of frames to the hub. Protocol
decisions live in rtsp.py, session.py, packet.py, depacketize.py and to_stream.py."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from typing import Callable, Iterator

from mediacore.compiled import JitterBuffer
from mediacore.config import RtspConfig
from mediacore.h264 import H264Error
from mediacore.hub import Hub, StreamBusy, StreamPublisher
from mediacore.media import Frame, Kind, Track
from mediacore.transcode import OpusToAac, ThreadedTranscoder

from .depacketize import AacDepacketizer, H264Depacketizer, OpusDepacketizer
from .errors import RtpError
from .packet import Nack, Pli, ReceiverReport, ReportBlock, SenderReport, parse_rtcp, parse_rtp
from .rtsp import Interleaved, RtspParser, response
from .sdp import MediaDescription
from .session import RtspSession
from .to_stream import RtpToFrames, SessionClock, aac_track, audio_track, video_track

log = logging.getLogger("mediacore.rtsp")


def worth_logging(before: int, count: int) -> bool:
    """Whether a count of bad packets that rose from `before` to `count` passed a mark worth
    a log line: each of the first ten, then the 16th, 32nd, 64th...: a hostile or broken
    sender cannot flood the log, and an operator still sees it go on."""
    return count > before and (before < 10 or count.bit_length() > before.bit_length())


class TrackReceiver:
    """One announced media: RTP -> jitter buffer -> depacketizer -> frames -> hub."""

    report_interval = 1.0  # seconds between receiver reports (RFC 3550 allows 5 s; viewers of the stats want fresher)

    def __init__(self, media: MediaDescription, publisher: StreamPublisher, peer: str, clock: SessionClock,
                 receiver_ssrc: int = 0) -> None:
        self.media = media
        self.publisher = publisher
        self.peer = peer
        self.jitter = JitterBuffer(media.clock_rate, capacity=2048)
        self.frames = RtpToFrames(media.clock_rate, clock)
        self.track: Track | None = None
        self.bad_packets = 0
        self.depacketizer: H264Depacketizer | AacDepacketizer | OpusDepacketizer
        self.transcoder: ThreadedTranscoder | None = None
        self._frames_track: Track | None = None  # the track RtpToFrames stamps (Opus: not published)
        if media.encoding == "H264":
            self.depacketizer = H264Depacketizer(media.sprop_parameter_sets)
            try:  # parameter sets in the SDP: the video track is known before the first frame, as audio's is
                self._track()
            except RtpError:
                pass  # unusable: in-band parameter sets may still come
        elif media.encoding == "OPUS":
            self.depacketizer = OpusDepacketizer()
            core = OpusToAac()
            self.track = aac_track(core.config)
            self._frames_track = Track(Kind.AUDIO, "opus", 48000, b"", "opus", sample_rate=48000, channels=2)
            self.transcoder = ThreadedTranscoder(core, self._on_aac)
            self._wall_anchor: tuple[int, float] | None = None
            publisher.update_track(self.track)
        else:
            self.depacketizer = AacDepacketizer(int(media.fmtp.get("sizelength", "13")),
                                                int(media.fmtp.get("indexlength", "3")),
                                                int(media.fmtp.get("indexdeltalength", "3")))
            self.track = audio_track(media)
            publisher.update_track(self.track)
        self.ssrc = 0
        self._last_seq = -1  # sequence number of the last packet released by the jitter buffer
        self.receiver_ssrc = receiver_ssrc
        self.bad_rtcp = 0
        self.sender_reports = 0
        self._last_sr: tuple[int, float] | None = None  # (middle 32 bits of its NTP time, arrival)
        self._next_report = 0.0
        self._next_pli = 0.0
        self.plis = 0
        self._orphans_logged = 0  # FU-A fragments without a start, as of the last tick
        self._reported = (0, 0)  # (expected, received) at the previous receiver report

    def on_rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except RtpError as e:
            self.bad_rtcp += 1
            self._report_bad("a bad RTCP packet", self.bad_rtcp, e)
            return
        for packet in packets:
            if isinstance(packet, SenderReport) and (self.ssrc in (0, packet.ssrc)):
                self.sender_reports += 1
                self._last_sr = (int(packet.ntp_seconds * 65536) & 0xFFFFFFFF, now)
                self.frames.sender_report(packet.rtp_timestamp, packet.unix_time)

    def tick(self, now: float) -> list[bytes]:
        """Periodic work: release packets whose deadline passed; RTCP to send back (generic
        NACK for losses past their dwell, PLI while video waits for a keyframe after a loss,
        at most every 0.5 s; a receiver report every `report_interval`)."""
        self.drain(now)
        out = []
        lost = self.jitter.nacks(now)
        if lost and self.ssrc:
            out.append(Nack(self.receiver_ssrc, self.ssrc, lost).serialize())
        if isinstance(self.depacketizer, H264Depacketizer):
            orphans = self.depacketizer.dropped_fragments  # counted here, off the per-packet path
            if worth_logging(self._orphans_logged, orphans):
                log.warning("rtp %s: FU-A fragment whose start was never seen: %d dropped so far", self.peer,
                            orphans)
            self._orphans_logged = orphans
        if (isinstance(self.depacketizer, H264Depacketizer) and self.depacketizer.wants_keyframe and self.ssrc
                and now >= self._next_pli):
            self._next_pli = now + 0.5
            self.plis += 1
            out.append(Pli(self.receiver_ssrc, self.ssrc).serialize())
        if self.ssrc and now >= self._next_report:
            self._next_report = now + self.report_interval
            out.append(self.receiver_report(now).serialize())
        return out

    def _report_bad(self, what: str, count: int, error: object) -> None:
        if worth_logging(count - 1, count):
            log.warning("rtp %s: dropped %s (%d so far): %s", self.peer, what, count, error)

    def receiver_report(self, now: float) -> ReceiverReport:
        """RFC 3550 6.4.2 report block for the one source of this track."""
        jb = self.jitter
        expected = jb.received + jb.lost
        prev_expected, prev_received = self._reported
        interval_expected = expected - prev_expected
        interval_lost = interval_expected - (jb.received - prev_received)
        fraction = (interval_lost << 8) // interval_expected if interval_expected > 0 and interval_lost > 0 else 0
        self._reported = (expected, jb.received)
        lsr, dlsr = 0, 0
        if self._last_sr is not None:
            lsr = self._last_sr[0]
            dlsr = int((now - self._last_sr[1]) * 65536)
        block = ReportBlock(self.ssrc, min(fraction, 255), min(jb.lost, 0x7FFFFF), max(jb.highest_sequence, 0) & 0xFFFFFFFF,
                            int(jb.jitter), lsr, dlsr)
        return ReceiverReport(self.receiver_ssrc, [block])

    def counters(self) -> dict[str, int]:
        """What happened to this track's packets and frames (exported as metrics)."""
        jb = self.jitter
        d = self.depacketizer
        return {"received": jb.received, "lost": jb.lost, "late": jb.late, "duplicate": jb.duplicates,
                "reordered": jb.reordered, "bad": self.bad_packets, "bad_rtcp": self.bad_rtcp,
                "orphan_fragment": getattr(d, "dropped_fragments", 0),
                "damaged_frames": getattr(d, "damaged_units", 0), "skipped_frames": getattr(d, "skipped_units", 0)}

    def _on_aac(self, frames: list[tuple[int, bytes]]) -> None:
        assert self.track is not None and self._wall_anchor is not None
        pts0, wall0 = self._wall_anchor
        for pts, data in frames:
            self.publisher.send(Frame(self.track, pts, pts, True, data, wall0 + (pts - pts0) / 48000))

    def on_rtp(self, data: bytes, now: float) -> None:
        try:
            packet = parse_rtp(data)
        except RtpError as e:
            self.bad_packets += 1
            self._report_bad("a bad RTP packet", self.bad_packets, e)
            return
        if packet.payload_type != self.media.payload_type:
            return
        self.ssrc = packet.ssrc
        self.jitter.push(packet.sequence, packet.timestamp, packet.ssrc, packet, now)
        self.drain(now)

    def drain(self, now: float) -> None:
        for packet in self.jitter.pop(now):
            if self._last_seq >= 0 and packet.sequence != (self._last_seq + 1) & 0xFFFF:
                self.depacketizer.lost()
            self._last_seq = packet.sequence
            try:
                units = self.depacketizer.push(packet)
            except RtpError as e:
                self.bad_packets += 1
                self._report_bad("a bad RTP payload", self.bad_packets, e)
                continue
            wall = time.time()
            for unit in units:
                track = self._frames_track or self._track()
                if track is None:
                    continue
                for frame in self.frames.push(track, unit, wall):
                    self._send(frame)

    def _send(self, frame: Frame) -> None:
        if self.transcoder is None:
            self.publisher.send(frame)
            return
        if self._wall_anchor is None:
            self._wall_anchor = (frame.pts, frame.wallclock)
        self.transcoder.submit(frame.pts, frame.data)

    def finish(self, now: float) -> None:
        """The session ended: release everything buffered, gaps and reorder window included."""
        self.drain(now + 3600.0)
        track = self._frames_track or self.track
        if track is not None:
            for frame in self.frames.flush(track, time.time()):
                self._send(frame)
        if self.transcoder is not None:
            self.transcoder.close()

    def _track(self) -> Track | None:
        if self.track is None and isinstance(self.depacketizer, H264Depacketizer):
            sps, pps = self.depacketizer.sps, self.depacketizer.pps
            if sps is None or pps is None:
                return None
            try:
                self.track = video_track(sps, pps)
            except H264Error as e:
                raise RtpError(f"bad H.264 parameter sets: {e}") from e
            self.publisher.update_track(self.track)
        return self.track


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_data: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_data = on_data

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_data(data, addr)


class RtspConnection(asyncio.Protocol):
    def __init__(self, server: "RtspServer") -> None:
        self.server = server
        self.parser = RtspParser()
        self.session = RtspSession(server.check_publish, self._allocate_ports, server.max_stream_name)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.publisher: StreamPublisher | None = None
        self.receivers: dict[int, TrackReceiver] = {}
        self._sockets: list[tuple[socket.socket, socket.socket]] = []
        self._udp: list[asyncio.BaseTransport] = []
        self._rtcp_out: dict[int, tuple[asyncio.DatagramTransport, tuple[str, int]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._created = 0.0
        self._last_rx = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._created = self._last_rx = time.monotonic()
        self._tick()

    def _allocate_ports(self) -> tuple[int, int]:
        pair = self.server.bind_udp_pair()
        self._sockets.append(pair)
        return pair[0].getsockname()[1], pair[1].getsockname()[1]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._last_rx = time.monotonic()
        try:
            for item in self.parser.feed(data):
                if isinstance(item, Interleaved):
                    self._interleaved(item)
                    continue
                was_recording = self.session.recording
                reply = self.session.handle(item)
                if self.transport is not None:
                    self.transport.write(reply)
                if self._sockets and item.method == "SETUP":
                    asyncio.get_running_loop().create_task(self._open_udp())
                if self.session.recording and not was_recording:
                    self._start_publishing()
                if self.session.closed:
                    # UDP datagrams sent just before TEARDOWN may still be in flight: collect
                    # them for a moment before releasing the buffers and closing.
                    asyncio.get_running_loop().call_later(0.3, self.close, "teardown")
                    return
        except (RtpError, H264Error) as e:
            self.fail(str(e))

    def _interleaved(self, item: Interleaved) -> None:
        for index, setup in self.session.tracks.items():
            if setup.tcp and index in self.receivers:
                if item.channel == setup.channels[0]:
                    self.receivers[index].on_rtp(item.data, time.monotonic())
                elif item.channel == setup.channels[1]:
                    self.receivers[index].on_rtcp(item.data, time.monotonic())

    async def _open_udp(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sockets:
            rtp_sock, rtcp_sock = self._sockets.pop(0)
            index = next(i for i, s in self.session.tracks.items() if s.server_ports[0] == rtp_sock.getsockname()[1])

            def on_rtp(data: bytes, addr: tuple[str, int], index: int = index) -> None:
                receiver = self.receivers.get(index)
                if receiver is not None:
                    self._last_rx = time.monotonic()
                    receiver.on_rtp(data, self._last_rx)

            rtp_transport, _protocol = await loop.create_datagram_endpoint(lambda: Datagrams(on_rtp), sock=rtp_sock)
            def on_rtcp(data: bytes, addr: tuple[str, int], index: int = index) -> None:
                receiver = self.receivers.get(index)
                if receiver is not None:
                    receiver.on_rtcp(data, time.monotonic())

            rtcp_transport, _protocol = await loop.create_datagram_endpoint(lambda: Datagrams(on_rtcp), sock=rtcp_sock)
            self._udp += [rtp_transport, rtcp_transport]
            host = self.peer.rsplit(":", 1)[0]
            setup = self.session.tracks[index]
            self._rtcp_out[index] = (rtcp_transport, (host, setup.client_ports[1]))

    def _start_publishing(self) -> None:
        assert self.session.sdp is not None
        try:
            self.publisher = self.server.hub.publish(self.session.stream_name)
        except StreamBusy as e:
            raise RtpError(str(e)) from e
        clock = SessionClock()
        ssrc = secrets.randbits(32) | 1
        for index, media in enumerate(self.session.sdp.media):
            self.receivers[index] = TrackReceiver(media, self.publisher, self.peer, clock, ssrc)
        log.info("rtsp %s: publishing stream %s (%s)", self.peer, self.session.stream_name,
                 ", ".join("TCP" if s.tcp else "UDP" for s in self.session.tracks.values()))

    def _tick(self) -> None:
        """Every 20 ms: release packets whose playout deadline passed, send NACKs, time out."""
        if self.closed:
            return
        now = time.monotonic()
        config = self.server.config
        if not self.session.recording and now - self._created > config.record_timeout:
            self.fail(f"no RECORD within {config.record_timeout:g} s")
            return
        if now - self._last_rx > config.session_timeout:
            self.fail(f"no data for {config.session_timeout:g} s")
            return
        try:
            for index, receiver in self.receivers.items():
                for rtcp in receiver.tick(now):
                    self._send_rtcp(index, rtcp)
        except (RtpError, H264Error) as e:
            self.fail(str(e))
            return
        self._timer = asyncio.get_running_loop().call_later(0.02, self._tick)

    def _send_rtcp(self, index: int, data: bytes) -> None:
        setup = self.session.tracks.get(index)
        if setup is not None and setup.tcp:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"$" + bytes([setup.channels[1]]) + len(data).to_bytes(2, "big") + data)
        elif index in self._rtcp_out:
            transport, addr = self._rtcp_out[index]
            transport.sendto(data, addr)

    def fail(self, reason: str) -> None:
        if self.closed:
            return
        log.warning("rtsp %s [%s]: closed: %s", self.peer, self.session.stream_name or "-", reason)
        self.server.on_error()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response("0", 400, "Bad Request"))
        self.close(reason)

    def close(self, reason: str) -> None:
        if self.closed and self.publisher is None and not self._udp:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.publisher is not None:
            for receiver in self.receivers.values():
                try:
                    receiver.finish(time.monotonic())
                except (RtpError, H264Error):
                    pass
            log.info("rtsp %s: stream %s unpublished (%s)", self.peer, self.session.stream_name, reason)
            self.publisher.close()
            self.publisher = None
        for transport in self._udp:
            transport.close()
        for pair in self._sockets:
            for sock in pair:
                sock.close()
        self._sockets.clear()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.close("connection closed")
        self.server.connections.discard(self)


class RtspServer:
    def __init__(self, hub: Hub, config: RtspConfig, authorize: Callable[[str, str], bool],
                 max_stream_name: int = 128, on_error: Callable[[], None] = lambda: None) -> None:
        self.hub = hub
        self.config = config
        self.authorize = authorize
        self.max_stream_name = max_stream_name
        self.on_error = on_error
        self.connections: set[RtspConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._next_port = config.udp_port_min
        self.host = "0.0.0.0"

    def track_receivers(self) -> Iterator[tuple[str, TrackReceiver]]:
        """(stream name, receiver) for every track of every publishing session."""
        for conn in list(self.connections):
            for receiver in conn.receivers.values():
                yield conn.session.stream_name, receiver

    def check_publish(self, name: str, key: str) -> str | None:
        if not self.authorize(name, key):
            return "Unauthorized: publish key is missing or wrong"
        stream = self.hub.get(name)
        if stream is not None and stream.publishing:
            return "Invalid Range: stream is already being published"
        return None

    def bind_udp_pair(self) -> tuple[socket.socket, socket.socket]:
        """An even RTP port and the RTCP port after it, from the configured range."""
        span = self.config.udp_port_max - self.config.udp_port_min
        for _ in range(span // 2 + 1):
            port = self._next_port
            self._next_port += 2
            if self._next_port + 1 > self.config.udp_port_max:
                self._next_port = self.config.udp_port_min
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp.bind((self.host, port))
                rtcp.bind((self.host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            return rtp, rtcp
        raise RtpError("no free UDP port pair in the configured RTP range")

    async def start(self, host: str, port: int) -> int:
        self.host = host
        loop = asyncio.get_running_loop()

        def factory() -> RtspConnection:
            conn = RtspConnection(self)
            self.connections.add(conn)
            return conn

        self._server = await loop.create_server(factory, host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close("server stopping")
        if self._server is not None:
            await self._server.wait_closed()

"""The asyncio shell around the RTSP/RTP core: the RTSP TCP connection (with interleaved
RTP), the UDP sockets of each track, and the hand-off of frames to the hub. Protocol
decisions live in rtsp.py, session.py, packet.py, depacketize.py and to_stream.py."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator

from mediacore.hub.publisher import Publisher, PublishPoint, StreamBusy
from mediacore.model.h264 import H264Error

from .config import TEARDOWN_LINGER, TICK_SECONDS, UDP_RECEIVE_BUFFER, RtspConfig
from .errors import RtpError
from .receiver import TrackReceiver
from .rtsp import Interleaved, RtspParser, response
from .session import RtspSession
from .to_stream import SessionClock

log = logging.getLogger("mediacore.rtsp")


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_data: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_data = on_data

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_data(data, addr)


class RtspConnection(asyncio.Protocol):
    def __init__(self, server: RtspServer) -> None:
        self.server = server
        self.parser = RtspParser()
        self.session = RtspSession(server.check_publish, self._allocate_ports)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.publisher: Publisher | None = None
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
        self._created = self._last_rx = self.server.clock()
        self._tick()

    def _allocate_ports(self) -> tuple[int, int]:
        pair = self.server.bind_udp_pair()
        self._sockets.append(pair)
        return pair[0].getsockname()[1], pair[1].getsockname()[1]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._last_rx = self.server.clock()
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
                    asyncio.get_running_loop().call_later(TEARDOWN_LINGER, self.close, "teardown")
                    return
        except (RtpError, H264Error) as e:
            self.fail(str(e))

    def _interleaved(self, item: Interleaved) -> None:
        for index, setup in self.session.tracks.items():
            if setup.tcp and index in self.receivers:
                if item.channel == setup.channels[0]:
                    self.receivers[index].on_rtp(item.data, self.server.clock(), self.server.wall_clock())
                elif item.channel == setup.channels[1]:
                    self.receivers[index].on_rtcp(item.data, self.server.clock())

    async def _open_udp(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sockets:
            rtp_sock, rtcp_sock = self._sockets.pop(0)
            index = next(i for i, s in self.session.tracks.items() if s.server_ports[0] == rtp_sock.getsockname()[1])

            def on_rtp(data: bytes, addr: tuple[str, int], index: int = index) -> None:
                receiver = self.receivers.get(index)
                if receiver is not None:
                    self._last_rx = self.server.clock()
                    receiver.on_rtp(data, self._last_rx, self.server.wall_clock())

            rtp_transport, _protocol = await loop.create_datagram_endpoint(lambda: Datagrams(on_rtp), sock=rtp_sock)

            def on_rtcp(data: bytes, addr: tuple[str, int], index: int = index) -> None:
                receiver = self.receivers.get(index)
                if receiver is not None:
                    receiver.on_rtcp(data, self.server.clock())

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
        log.info(
            "rtsp %s: publishing stream %s (%s)",
            self.peer,
            self.session.stream_name,
            ", ".join("TCP" if s.tcp else "UDP" for s in self.session.tracks.values()),
        )

    def _tick(self) -> None:
        """Every TICK_SECONDS: release packets whose playout deadline passed, send NACKs, time out."""
        if self.closed:
            return
        now = self.server.clock()
        config = self.server.config
        if not self.session.recording and now - self._created > config.record_timeout:
            self.fail(f"no RECORD within {config.record_timeout:g} s")
            return
        if now - self._last_rx > config.session_timeout:
            self.fail(f"no data for {config.session_timeout:g} s")
            return
        wall = self.server.wall_clock()
        try:
            for index, receiver in self.receivers.items():
                for rtcp in receiver.tick(now, wall):
                    self._send_rtcp(index, rtcp)
        except (RtpError, H264Error) as e:
            self.fail(str(e))
            return
        self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

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
                    receiver.finish(self.server.clock(), self.server.wall_clock())
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
    def __init__(
        self,
        hub: PublishPoint,
        config: RtspConfig,
        authorize: Callable[[str, str], bool],
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.clock = clock  # monotonic seconds: timeouts, buffering, RTCP timing
        self.wall_clock = wall_clock  # seconds since the epoch: frames' wall-clock times (PDT)
        self.config = config
        self.authorize = authorize
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
        if self.hub.is_publishing(name):
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
            rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
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

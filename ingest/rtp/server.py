"""The asyncio shell around the RTSP/RTP core: the RTSP TCP connection (with interleaved
RTP), the UDP sockets of each track, and the hand-off of frames to the hub. Protocol
decisions live in rtsp.py, session.py, packet.py, depacketize.py and to_stream.py.

An ANNOUNCE is decided by the server's Authorizer (it may take a round trip to a publish
hook): meanwhile the connection holds what arrives after it (and stops reading past
HELD_WHILE_DECIDING bytes), answers the ANNOUNCE after the decision, then goes on with it."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator

from ingest.authorize import decide
from ingest.listen import adopt, listen
from mediacore.hub.publisher import HELD_WHILE_DECIDING, Authorizer, PublishAttempt, Publisher, PublishPoint, StreamBusy
from mediacore.model.counting import worth_logging
from mediacore.model.h264 import H264Error

from .config import TEARDOWN_LINGER, TICK_SECONDS, RtspConfig, repair_bitrate
from .errors import RtpError
from .receiver import SourceLock, TrackReceiver
from .rtsp import Interleaved, Request, RtspParser, interleaved, response
from .session import RtspSession
from .to_stream import SessionClock
from .udp_buffer import widen_receive_buffer

log = logging.getLogger("mediacore.rtsp")


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_data: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_data = on_data

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_data(data, addr)


def plain_host(host: str) -> str:
    """The IPv4 address of an IPv4-mapped IPv6 peer (as a dual-stack listener reports it),
    as the UDP sockets (IPv4) see the same host."""
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


class RtspConnection(asyncio.Protocol):
    def __init__(self, server: RtspServer) -> None:
        self.server = server
        self.parser = RtspParser()
        self.session = RtspSession(self._allocate_ports)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = "?"  # the client's address: the only host its UDP datagrams may come from
        self.admitted = False
        self.publisher: Publisher | None = None
        self.receivers: dict[int, TrackReceiver] = {}
        self._sockets: list[tuple[socket.socket, socket.socket]] = []
        self._udp: list[asyncio.BaseTransport] = []
        self._rtcp_out: dict[int, tuple[asyncio.DatagramTransport, tuple[str, int]]] = {}
        self._timer: asyncio.TimerHandle | None = None  # the TICK_SECONDS timer, from RECORD on
        self._deadline: asyncio.TimerHandle | None = None  # before RECORD: the nearer of the two timeouts
        self._created = 0.0
        self._last_rx = 0.0
        self._writing_paused = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempt: PublishAttempt | None = None  # the admitted credentials, from ANNOUNCE on
        self._deciding: asyncio.Task[None] | None = None  # the pending ANNOUNCE decision
        self._held: list[Request | Interleaved] = []  # parsed after that ANNOUNCE, until its decision
        self._held_bytes = bytearray()  # arrived while reading was paused for it
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.host = plain_host(peer[0]) if peer else "?"
        if not self.server.admit(self):
            self.closed = True
            self.transport.abort()  # type: ignore[union-attr]
            return
        self.admitted = True
        self._created = self._last_rx = self.server.clock()
        self._arm_deadline()

    def _allocate_ports(self) -> tuple[int, int]:
        pair = self.server.bind_udp_pair()
        self._sockets.append(pair)
        return pair[0].getsockname()[1], pair[1].getsockname()[1]

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._last_rx = self.server.clock()
        try:
            self._receive(data)
        except (RtpError, H264Error) as e:
            self.fail(str(e))
        except Exception as e:  # a bug must close this session with its trace, not leave it half-alive
            self.fail(f"internal error: {e!r}", e)

    def _receive(self, data: bytes) -> None:
        if self._deciding is not None:
            self._held_bytes += data  # until the decision; past a bound, reading pauses
            if len(self._held_bytes) > HELD_WHILE_DECIDING and self.transport is not None:
                self.transport.pause_reading()
            return
        self._handle_items(self.parser.feed(data))

    def _handle_items(self, items: list[Request | Interleaved]) -> None:
        for i, item in enumerate(items):
            if self.closed:
                return
            if self._deciding is not None:
                self._held.extend(items[i:])
                return
            if isinstance(item, Interleaved):
                self._interleaved(item)
                continue
            was_recording = self.session.recording
            refusals = self.session.refusals
            reply = self.session.handle(item)
            if worth_logging(refusals, self.session.refusals):
                log.warning(
                    "rtsp %s [%s]: %s refused: %s",
                    self.peer,
                    self.session.stream_name or "-",
                    item.method[:20],
                    self.session.refusal,
                )
            self._write(reply)
            if self.session.pending is not None:
                self._begin_decision()
                continue
            if self._sockets and item.method == "SETUP":
                task = asyncio.get_running_loop().create_task(self._open_udp())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self.session.recording and not was_recording:
                self._start_publishing()
            if self.session.closed:
                # UDP datagrams sent just before TEARDOWN may still be in flight: collect
                # them for a moment before releasing the buffers and closing.
                asyncio.get_running_loop().call_later(TEARDOWN_LINGER, self.close, "teardown")
                return

    def _begin_decision(self) -> None:
        pending = self.session.pending
        assert pending is not None
        attempt = PublishAttempt(pending.name, pending.key, "rtsp", self.host)
        self._deciding = asyncio.get_running_loop().create_task(self._decide(attempt))

    async def _decide(self, attempt: PublishAttempt) -> None:
        """Await the authorizer, answer the ANNOUNCE, then go on with what was held."""
        refusal = await decide(self.server.authorize, attempt, self.peer)
        if self.closed:  # the peer left while the decision was pending
            return
        self._deciding = None
        if refusal is None and self.server.hub.is_publishing(attempt.stream):
            self._write(self.session.decide_announce(453, "Invalid Range"))
            self._refused(attempt.stream, "stream is already being published", error=False)
            return
        if refusal is not None:
            self._write(self.session.decide_announce(401, "Unauthorized"))
            self._refused(attempt.stream, refusal)
            return
        self._attempt = attempt
        self._write(self.session.decide_announce())
        try:
            held, self._held = self._held, []
            self._handle_items(held)
            data, self._held_bytes = bytes(self._held_bytes), bytearray()
            if data and not self.closed:
                self._receive(data)
        except (RtpError, H264Error) as e:
            self.fail(str(e))
            return
        except Exception as e:
            self.fail(f"internal error: {e!r}", e)
            return
        if not self.closed and self._deciding is None and self.transport is not None:
            self.transport.resume_reading()

    def _refused(self, name: str, reason: str, error: bool = True) -> None:
        """Log a refused publish (the first ten, then every power of two), count it as an
        ingest error if it is one (a name that is busy is not), and close once the reply had
        a moment to leave."""
        server = self.server
        before, server.publish_refusals = server.publish_refusals, server.publish_refusals + 1
        if worth_logging(before, server.publish_refusals):
            refused = server.publish_refusals
            log.warning("rtsp %s [%s]: publish refused: %s (%d refused so far)", self.peer, name, reason, refused)
        if error:
            server.on_error()
        self._held.clear()
        self._held_bytes.clear()
        asyncio.get_running_loop().call_later(TEARDOWN_LINGER, self.close, "publish refused")

    def _abandon_decision(self) -> None:
        if self._deciding is not None:
            self._deciding.cancel()
            self._deciding = None
        self._held.clear()
        self._held_bytes.clear()

    def _write(self, data: bytes) -> None:
        """Send to the peer; a peer that leaves more than max_write_buffer bytes unread (it
        sends requests and never reads the replies) is closed instead of buffered for."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        buffered = transport.get_write_buffer_size()
        limit = self.server.config.max_write_buffer
        if buffered > limit:
            log.warning(
                "rtsp %s [%s]: closed: peer does not read: %d bytes queued (limit %d)",
                self.peer,
                self.session.stream_name or "-",
                buffered,
                limit,
            )
            self.server.unread_closed += 1
            self.server.on_error()
            self.close("write buffer full")

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    def _interleaved(self, item: Interleaved) -> None:
        for index, setup in self.session.tracks.items():
            if setup.tcp and index in self.receivers:
                if item.channel == setup.channels[0]:
                    self.receivers[index].on_rtp(item.data, self.server.clock(), self.server.wall_clock())
                elif item.channel == setup.channels[1]:
                    self.receivers[index].on_rtcp(item.data, self.server.clock())

    async def _open_udp(self) -> None:
        try:
            await self._wrap_udp_sockets()
        except Exception as e:
            self.fail(f"internal error opening UDP: {e!r}", e)

    async def _wrap_udp_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sockets and not self.closed:
            rtp_sock, rtcp_sock = self._sockets.pop(0)
            index = next(i for i, s in self.session.tracks.items() if s.server_ports[0] == rtp_sock.getsockname()[1])
            transports: list[asyncio.DatagramTransport] = []
            for sock, rtcp in ((rtp_sock, False), (rtcp_sock, True)):
                if self.closed:  # closed while the other socket was being wrapped
                    sock.close()
                    continue
                on_data = functools.partial(self._on_udp, index, rtcp)
                transport, _protocol = await loop.create_datagram_endpoint(
                    functools.partial(Datagrams, on_data), sock=sock
                )
                self._udp.append(transport)
                transports.append(transport)
                if self.closed:
                    transport.close()
            if len(transports) == 2:
                setup = self.session.tracks[index]
                # RTCP replies go to the client's host only, at the port it declared.
                self._rtcp_out[index] = (transports[1], (self.host, setup.client_ports[1]))

    def _on_udp(self, index: int, rtcp: bool, data: bytes, addr: tuple[str, int]) -> None:
        receiver = self.receivers.get(index)
        if receiver is None or self.closed:
            return
        now = self.server.clock()
        try:
            if rtcp:
                receiver.on_rtcp(data, now, addr)
            elif receiver.on_rtp(data, now, self.server.wall_clock(), addr):
                self._last_rx = now  # strangers' datagrams keep no session alive
        except (RtpError, H264Error) as e:
            self.fail(str(e))
        except Exception as e:
            self.fail(f"internal error: {e!r}", e)

    def _start_publishing(self) -> None:
        assert self.session.sdp is not None
        try:
            self.publisher = self.server.hub.publish(self.session.stream_name, stop=self.stop, attempt=self._attempt)
        except StreamBusy as e:
            raise RtpError(str(e)) from e
        clock = SessionClock()
        ssrc = secrets.randbits(32) | 1
        for index, media in enumerate(self.session.sdp.media):
            udp = not self.session.tracks[index].tcp
            # UDP: only the RTSP client's host, from the port its first datagram comes from;
            # RTCP from that host, from the port its first report comes from.
            rtp_source = SourceLock(self.host) if udp else None
            rtcp_source = SourceLock(leader=rtp_source) if rtp_source is not None else None
            config = self.server.config
            self.receivers[index] = TrackReceiver(
                media,
                self.publisher,
                self.peer,
                clock,
                ssrc,
                rtp_source=rtp_source,
                rtcp_source=rtcp_source,
                repair_bitrate=repair_bitrate(config.video_repair, config.video_repair_bitrate),
            )
        log.info(
            "rtsp %s: publishing stream %s (%s)",
            self.peer,
            self.session.stream_name,
            ", ".join("TCP" if s.tcp else "UDP" for s in self.session.tracks.values()),
        )
        # From RECORD on, the session timer releases packets, sends RTCP and keeps the timeouts.
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def _timed_out(self, now: float) -> bool:
        """Close the session if it missed a deadline; True if it did."""
        config = self.server.config
        if not self.session.recording and now - self._created >= config.record_timeout:
            self.fail(f"no RECORD within {config.record_timeout:g} s")
            return True
        if now - self._last_rx >= config.session_timeout:
            self.fail(f"no data for {config.session_timeout:g} s")
            return True
        return False

    def _arm_deadline(self) -> None:
        """Before RECORD, one timer at the nearer of the RECORD and idle deadlines: a
        connection that has not published costs no periodic work."""
        config = self.server.config
        due = min(self._created + config.record_timeout, self._last_rx + config.session_timeout)
        delay = max(due - self.server.clock(), 0.0)
        self._deadline = asyncio.get_running_loop().call_later(delay, self._check_deadline)

    def _check_deadline(self) -> None:
        self._deadline = None
        if self.closed or self.session.recording:
            return
        try:
            if not self._timed_out(self.server.clock()):
                self._arm_deadline()
        except Exception as e:
            self.fail(f"internal error in the session deadline: {e!r}", e)

    def _tick(self) -> None:
        """Every TICK_SECONDS from RECORD on: release packets whose playout deadline passed,
        send NACKs and reports, time out. Whatever it raises closes the session with a
        logged error: a timer that died silently would also stop the session's timeouts."""
        self._timer = None
        if self.closed:
            return
        try:
            now = self.server.clock()
            if self._timed_out(now):
                return
            wall = self.server.wall_clock()
            for index, receiver in self.receivers.items():
                for rtcp in receiver.tick(now, wall):
                    self._send_rtcp(index, rtcp)
        except (RtpError, H264Error) as e:
            self.fail(str(e))
            return
        except Exception as e:
            self.fail(f"internal error in the session timer: {e!r}", e)
            return
        if not self.closed:
            self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def _send_rtcp(self, index: int, data: bytes) -> None:
        setup = self.session.tracks.get(index)
        if setup is not None and setup.tcp:
            if not self._writing_paused:  # RTCP is periodic: skipped, not buffered, while the peer does not read
                self._write(interleaved(setup.channels[1], data))
        elif index in self._rtcp_out:
            transport, addr = self._rtcp_out[index]
            transport.sendto(data, addr)

    def fail(self, reason: str, error: BaseException | None = None) -> None:
        """Close the session for a protocol violation (logged as a warning) or an internal
        error (`error`, logged with its traceback); either counts as an ingest error."""
        if self.closed:
            return
        name = self.session.stream_name or "-"
        if error is None:
            log.warning("rtsp %s [%s]: closed: %s", self.peer, name, reason)
        else:
            log.error("rtsp %s [%s]: closed: %s", self.peer, name, reason, exc_info=error)
        self.server.on_error()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response("0", 400, "Bad Request"))
        self.close(reason)

    def stop(self, reason: str) -> None:
        """The server ends this session (kicked, key revoked): logged, not an ingest error."""
        if not self.closed:
            log.info("rtsp %s [%s]: stopped by the server: %s", self.peer, self.session.stream_name or "-", reason)
            self.close(f"stopped by the server: {reason}")

    def close(self, reason: str) -> None:
        if self.closed and self.publisher is None and not self._udp:
            return
        self.closed = True
        self._abandon_decision()
        for timer in (self._timer, self._deadline):
            if timer is not None:
                timer.cancel()
        self._timer = self._deadline = None
        if self.publisher is not None:
            for receiver in self.receivers.values():
                try:
                    receiver.finish(self.server.clock(), self.server.wall_clock())
                except Exception as e:  # the stream ends anyway; what was buffered is lost
                    log.warning("rtsp %s: flushing a track at close failed: %r", self.peer, e)
            log.info("rtsp %s: stream %s unpublished (%s)", self.peer, self.session.stream_name, reason)
            self.publisher.close()
            self.publisher = None
        for transport in self._udp:
            transport.close()
        self._udp.clear()
        self._rtcp_out.clear()
        for pair in self._sockets:
            for sock in pair:
                sock.close()
        self._sockets.clear()
        if self.transport is not None:
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # the peer is not reading: what it left unread goes with it
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.close("connection closed")
        if self.admitted:
            self.admitted = False
            self.server.release(self)


class RtspServer:
    def __init__(
        self,
        hub: PublishPoint,
        config: RtspConfig,
        authorize: Authorizer,
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
        self.per_host: dict[str, int] = {}  # open connections by client address
        self.refused = 0  # connections closed at once for a connection cap
        self.unread_closed = 0  # connections closed for leaving more than max_write_buffer unread
        self.publish_refusals = 0  # ANNOUNCEs the authorizer refused
        self._servers: list[asyncio.base_events.Server] = []
        self._next_port = config.udp_port_min
        self.host = "0.0.0.0"

    def track_receivers(self) -> Iterator[tuple[str, TrackReceiver]]:
        """(stream name, receiver) for every track of every publishing session."""
        for conn in list(self.connections):
            for receiver in conn.receivers.values():
                yield conn.session.stream_name, receiver

    def admit(self, conn: RtspConnection) -> bool:
        """Whether a new connection fits under max_connections and max_connections_per_ip;
        one that does is counted until release(), one that does not is logged and counted."""
        config = self.config
        open_here = self.per_host.get(conn.host, 0)
        if len(self.connections) >= config.max_connections:
            reason = f"{len(self.connections)} connections open (limit {config.max_connections})"
        elif open_here >= config.max_connections_per_ip:
            reason = f"{open_here} connections from {conn.host} (limit {config.max_connections_per_ip})"
        else:
            self.connections.add(conn)
            self.per_host[conn.host] = open_here + 1
            return True
        before, self.refused = self.refused, self.refused + 1
        if worth_logging(before, self.refused):
            log.warning("rtsp %s: refused: %s (%d refused so far)", conn.peer, reason, self.refused)
        self.on_error()
        return False

    def release(self, conn: RtspConnection) -> None:
        self.connections.discard(conn)
        left = self.per_host.get(conn.host, 0) - 1
        if left > 0:
            self.per_host[conn.host] = left
        else:
            self.per_host.pop(conn.host, None)

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
            widen_receive_buffer(rtp)
            return rtp, rtcp
        raise RtpError("no free UDP port pair in the configured RTP range")

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen on `port` (0: a free one, returned); with `tls`, RTSPS: the same connections
        inside TLS, its handshake bounded by `tls_handshake_timeout`. May be called once
        for the plain port and once for the TLS one; the limits count both together."""
        self.host = host
        server = await listen(lambda: RtspConnection(self), host, port, tls, self.config.tls_handshake_timeout)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def adopt(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve a connection another process accepted on the RTSP (or, with `tls`, RTSPS) port."""
        await adopt(lambda: RtspConnection(self), sock, tls, self.config.tls_handshake_timeout)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close("server stopping")
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

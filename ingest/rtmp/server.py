"""The asyncio shell around the RTMP core: moves bytes between sockets and ServerSession,
and hands frames to the hub through the Publisher interface. No protocol logic lives here.

A publish request is decided by the server's Authorizer, which may take a round trip to a
publish hook: meanwhile the connection holds what arrives after the request (and stops
reading past HELD_WHILE_DECIDING bytes); it replays that once the publish is accepted
(encoders wait for NetStream.Publish.Start anyway) and drops it if the publish is refused
or the peer leaves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable

from ingest.authorize import decide
from ingest.listen import adopt, listen
from mediacore.hub.publisher import HELD_WHILE_DECIDING, Authorizer, PublishAttempt, Publisher, PublishPoint, StreamBusy
from mediacore.model.counting import worth_logging
from mediacore.model.h264 import H264Error
from mediacore.model.metadata import MetadataError

from .amf0 import AmfLimits
from .chunk import ChunkLimits
from .config import PEER_SEND_BUFFER, RtmpConfig
from .errors import RtmpError
from .session import (
    Connected,
    CuePoint,
    Event,
    MediaMessage,
    Metadata,
    PublishRequest,
    ServerSession,
    SessionLimits,
    Unpublished,
)
from .to_stream import RtmpToFrames

log = logging.getLogger("mediacore.rtmp")


def session_limits(config: RtmpConfig) -> SessionLimits:
    return SessionLimits(
        chunk=ChunkLimits(
            max_chunk_size=config.max_chunk_size,
            max_message_size=config.max_message_size,
            max_chunk_streams=config.max_chunk_streams,
            max_buffered_bytes=config.max_buffered_bytes,
        ),
        amf=AmfLimits(config.max_amf_depth, config.max_amf_string, config.max_amf_items),
        window_ack_size=config.window_ack_size,
        out_chunk_size=config.out_chunk_size,
        control_rate=config.max_control_messages_per_second,
        control_burst=config.control_message_burst,
    )


class RtmpConnection(asyncio.Protocol):
    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        # Limits are read per connection, so a changed [rtmp] section applies to new ones.
        self.session = ServerSession(session_limits(server.config), epoch_ms=int(server.clock() * 1000))
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.publisher: Publisher | None = None
        self.frames: RtmpToFrames | None = None
        self.address = ""  # the peer's IP address, for the per-address cap
        self.publishes = 0
        self._last_rx = 0.0
        # The loop, kept from connection_made: asyncio.get_running_loop() costs a getpid()
        # system call, and data_received runs about a hundred times a second per publisher.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._publish_deadline: asyncio.TimerHandle | None = None
        self._deciding: asyncio.Task[None] | None = None  # the pending publish decision
        self._held: list[Event] = []  # events parsed after the publish request, until its decision
        self._held_bytes = bytearray()  # bytes that arrived while reading was paused for it
        self.closed = False

    # Transport callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.address = str(peer[0]) if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PEER_SEND_BUFFER)
        refusal = self.server.admit(self.address)
        self.server.connections.add(self)
        self.server.on_connection()
        if refusal is not None:
            self.server.refuse(self, refusal)
            return
        loop = self._loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._timer = loop.call_later(self.server.config.handshake_timeout, self._check_timeout)
        self._publish_deadline = loop.call_later(self.server.config.publish_deadline, self._check_published)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._loop is not None:
            self._last_rx = self._loop.time()
        if self._deciding is not None:
            self._held_bytes += data  # until the decision; past a bound, reading pauses
            if len(self._held_bytes) > HELD_WHILE_DECIDING and self.transport is not None:
                self.transport.pause_reading()
            return
        try:
            self._on_events(self.session.receive_data(data, self.server.clock()))
        except (RtmpError, H264Error) as e:
            self.fail(str(e))
            return
        self._flush()

    def _on_events(self, events: list[Event]) -> None:
        for i, event in enumerate(events):
            if self.closed:
                return
            if self._deciding is not None:
                self._held.extend(events[i:])
                return
            self._on_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._abandon_decision()
        for event in self.session.close():
            self._on_event(event)
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        self._cancel_timers()
        self.server.connections.discard(self)
        self.server.on_disconnect()

    # Protocol events -------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        if isinstance(event, MediaMessage):
            if self.frames is None or self.publisher is None:
                return
            tracks, frames = self.frames.push(event.type_id, event.timestamp, event.payload, self.server.wall_clock())
            for track in tracks:
                self.publisher.update_track(track)
            for frame in frames:
                self.publisher.send(frame)
        elif isinstance(event, PublishRequest):
            self._on_publish(event)
        elif isinstance(event, Metadata):
            if self.publisher is not None:
                self.publisher.set_metadata(event.values)
        elif isinstance(event, CuePoint):
            self._on_cue_point(event)
        elif isinstance(event, Unpublished):
            if self.publisher is not None:
                log.info("rtmp %s: stream %s unpublished (%s)", self.peer, self.session.stream_name, event.reason)
                self.publisher.close()
                self.publisher = None
        elif isinstance(event, Connected):
            log.debug("rtmp %s: connected app=%s encoder=%s", self.peer, event.app, event.flash_ver)

    def _on_cue_point(self, cue: CuePoint) -> None:
        """Timed metadata from the encoder; a refused cue point is logged and the stream goes on."""
        if self.frames is None or self.publisher is None:
            return
        try:
            item = self.frames.cue_point(cue.timestamp, cue.name, cue.parameters, self.server.wall_clock())
            if item is None:
                log.debug("rtmp %s: cue point %r ignored (not a product)", self.peer, cue.name[:64])
                return
            self.publisher.add_metadata(item)
        except MetadataError as e:
            log.warning("rtmp %s: stream %s: cue point refused: %s", self.peer, self.session.stream_name, e)

    def _on_publish(self, request: PublishRequest) -> None:
        self.publishes += 1
        limit = self.server.config.max_publishes_per_connection
        if self.publishes > limit:
            self.session.reject_publish("NetStream.Publish.Rejected", f"at most {limit} publishes per connection")
            raise RtmpError(f"publish number {self.publishes} on one connection (limit {limit})")
        attempt = PublishAttempt(request.name, request.key, "rtmp", self.address)
        self._deciding = asyncio.get_running_loop().create_task(self._decide(request, attempt))

    async def _decide(self, request: PublishRequest, attempt: PublishAttempt) -> None:
        """Await the authorizer, then answer the publish request and replay what was held."""
        refusal = await decide(self.server.authorize, attempt, self.peer)
        if self.closed:  # the peer left while the decision was pending
            return
        self._deciding = None
        if refusal is not None:
            self._refuse_publish(request.name, refusal)
            return
        try:
            self._start_publishing(request, attempt)
            held, self._held = self._held, []
            self._on_events(held)
            data, self._held_bytes = bytes(self._held_bytes), bytearray()
            if data and not self.closed:
                if self._deciding is not None:  # the held events asked to publish again
                    self._held_bytes += data
                else:
                    self._on_events(self.session.receive_data(data))
        except (RtmpError, H264Error) as e:
            self.fail(str(e))
            return
        self._flush()
        if not self.closed and self._deciding is None and self.transport is not None:
            self.transport.resume_reading()

    def _refuse_publish(self, name: str, reason: str) -> None:
        """Answer NetStream.Publish.Unauthorized and close; one log line for the first ten
        refusals, then every power of two (a client retrying a bad key cannot flood the log)."""
        server = self.server
        before, server.publish_refusals = server.publish_refusals, server.publish_refusals + 1
        if worth_logging(before, server.publish_refusals):
            refused = server.publish_refusals
            log.warning("rtmp %s [%s]: publish refused: %s (%d refused so far)", self.peer, name, reason, refused)
        self.session.reject_publish("NetStream.Publish.Unauthorized", reason)
        server.on_error()
        self.closed = True
        self._flush()
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def _abandon_decision(self) -> None:
        if self._deciding is not None:
            self._deciding.cancel()
            self._deciding = None
        self._held.clear()
        self._held_bytes.clear()

    def _start_publishing(self, request: PublishRequest, attempt: PublishAttempt) -> None:
        try:
            self.publisher = self.server.hub.publish(request.name, stop=self.stop, attempt=attempt)
        except StreamBusy as e:
            self.session.reject_publish("NetStream.Publish.BadName", str(e))
            raise RtmpError(str(e)) from e
        self.frames = RtmpToFrames(request.name)
        self.session.accept_publish()
        log.info("rtmp %s: publishing stream %s", self.peer, request.name)
        self._cancel_timers()
        self._timer = asyncio.get_running_loop().call_later(self.server.config.idle_timeout, self._check_timeout)

    # Helpers ---------------------------------------------------------------------------

    def _flush(self) -> None:
        out = self.session.data_to_send()
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out)
            queued = transport.get_write_buffer_size()
            if queued > self.server.config.max_write_buffer and not self.closed:
                self.fail(f"peer does not read: {queued} bytes queued (limit {self.server.config.max_write_buffer})")

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._publish_deadline):
            if timer is not None:
                timer.cancel()
        self._timer = self._publish_deadline = None

    def _check_published(self) -> None:
        if not self.closed and self.publisher is None:
            self.fail(f"no publish within {self.server.config.publish_deadline:g} s of connecting")

    def _check_timeout(self) -> None:
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        handshaking = self.session.state in ("handshake", "connecting")
        limit = self.server.config.handshake_timeout if handshaking else self.server.config.idle_timeout
        idle = loop.time() - self._last_rx
        if handshaking and self.session.state == "handshake":
            self.fail(f"handshake not completed within {limit:g} s")
            return
        if idle >= limit:
            self.fail(f"no data for {idle:.1f} s (idle timeout {limit:g} s)")
            return
        self._timer = loop.call_later(limit - idle, self._check_timeout)

    def stop(self, reason: str) -> None:
        """The server ends this session (kicked, key revoked): logged, not an ingest error."""
        if self.closed:
            return
        log.info("rtmp %s [%s]: stopped by the server: %s", self.peer, self.session.stream_name or "-", reason)
        self._shut(send_queued=False)

    def fail(self, reason: str) -> None:
        """Log once, send what the session queued (an error status), close this connection."""
        if self.closed:
            return
        name = self.session.stream_name or "-"
        log.warning("rtmp %s [%s]: closed: %s", self.peer, name, reason)
        self.server.on_error()
        self._shut(send_queued=True)

    def _shut(self, send_queued: bool) -> None:
        """Close this connection: the pending decision, the timers, the publishing session;
        with `send_queued`, what the session queued (an error status) goes out first."""
        self.closed = True
        self._abandon_decision()
        if send_queued:
            self._flush()
        self._cancel_timers()
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        if self.transport is not None:
            self.transport.close()


class RtmpServer:
    def __init__(
        self,
        hub: PublishPoint,
        config: RtmpConfig,
        authorize: Authorizer,
        on_connection: Callable[[], None] = lambda: None,
        on_disconnect: Callable[[], None] = lambda: None,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.clock = clock  # monotonic seconds: timeouts, buffering, RTCP timing
        self.wall_clock = wall_clock  # seconds since the epoch: frames' wall-clock times (PDT)
        self.config = config
        self.authorize = authorize
        self.on_connection = on_connection
        self.on_disconnect = on_disconnect
        self.on_error = on_error
        self.connections: set[RtmpConnection] = set()
        self.refused = 0  # connections closed at once for a connection cap
        self.publish_refusals = 0  # publish requests the authorizer refused
        self._servers: list[asyncio.base_events.Server] = []

    def admit(self, address: str) -> str | None:
        """Why a new connection from `address` is refused (a connection cap), or None."""
        config = self.config
        if len(self.connections) >= config.max_connections:
            return f"{len(self.connections)} connections open (limit {config.max_connections})"
        from_address = sum(1 for c in self.connections if c.address == address)
        if from_address >= config.max_connections_per_ip:
            return f"{from_address} connections from {address} (limit {config.max_connections_per_ip})"
        return None

    def refuse(self, connection: RtmpConnection, reason: str) -> None:
        before, self.refused = self.refused, self.refused + 1
        if worth_logging(before, self.refused):
            log.warning("rtmp %s: refused: %s (%d refused so far)", connection.peer, reason, self.refused)
        self.on_error()
        connection.closed = True
        if connection.transport is not None:
            connection.transport.abort()

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen on `port` (0: a free one, returned); with `tls`, RTMPS: the same connections
        inside TLS, its handshake bounded by `tls_handshake_timeout`. May be called once
        for the plain port and once for the TLS one; the limits count both together."""
        server = await listen(lambda: RtmpConnection(self), host, port, tls, self.config.tls_handshake_timeout)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def adopt(self, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
        """Serve a connection another process accepted on the RTMP (or, with `tls`, RTMPS) port."""
        await adopt(lambda: RtmpConnection(self), sock, tls, self.config.tls_handshake_timeout)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []

"""Raw RTP/UDP inputs described by an SDP file ([[rtp.inputs]] in the config): the way
cameras, encoders and gateways without RTSP push (`ffmpeg -f rtp -sdp_file ...`).

Each media of the SDP listens on its m= port (RTCP on the next port, or a=rtcp). The input
publishes its stream when packets arrive and unpublishes after `timeout` seconds without
any, so a sender that stops and starts again republishes like an RTMP or RTSP publisher
would. Each media takes RTP from one source address, the first it hears (and one SSRC);
another only once that one has been silent for SOURCE_SILENCE: strangers' datagrams are
dropped and counted (`foreign`). RTCP is taken only from the RTP source's host, and goes
back (generic NACK, PLI, receiver reports) only to where that host's RTCP comes from. The
per-track pipeline is ingest/rtp/receiver.py's TrackReceiver.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from mediacore.hub.publisher import Publisher, PublishPoint, StreamBusy
from mediacore.model.counting import worth_logging
from mediacore.model.h264 import H264Error

from .config import PUBLISH_RETRY, TICK_SECONDS
from .errors import RtpError
from .receiver import SourceLock, TrackReceiver
from .sdp import SessionDescription, check_ingestible
from .server import Datagrams
from .to_stream import SessionClock
from .udp_buffer import widen_receive_buffer

log = logging.getLogger("mediacore.rtp")


class RawRtpInput:
    def __init__(
        self,
        hub: PublishPoint,
        name: str,
        sdp: SessionDescription,
        host: str = "0.0.0.0",
        timeout: float = 10.0,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        repair_bitrate: int | None = None,
    ) -> None:
        """`repair_bitrate`: H.264 video is repaired at this bitrate (TrackReceiver's)."""
        check_ingestible(sdp)
        self.hub = hub
        self.clock = clock  # monotonic seconds: timeouts, buffering, RTCP timing
        self.wall_clock = wall_clock  # seconds since the epoch: frames' wall-clock times (PDT)

        self.name = name
        self.sdp = sdp
        self.host = host
        self.timeout = timeout
        self.repair_bitrate = repair_bitrate
        self.on_error = on_error
        self.publisher: Publisher | None = None
        self.receivers: dict[int, TrackReceiver] = {}
        self.ports: dict[int, tuple[int, int]] = {}  # media index -> bound (RTP, RTCP) ports
        self._transports: dict[int, tuple[asyncio.DatagramTransport, asyncio.DatagramTransport]] = {}
        # Where each media's RTP and RTCP may come from; they outlive sessions, so a stranger
        # cannot take an input over in the moment between a session and the next.
        self._rtp_sources = {i: SourceLock() for i in range(len(sdp.media))}
        self._rtcp_sources = {i: SourceLock(leader=self._rtp_sources[i]) for i in range(len(sdp.media))}
        self.strangers = 0  # datagrams from a foreign source while no session was publishing
        self._last_rx = 0.0
        self._retry_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.sessions = 0
        self.closed = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for index, media in enumerate(self.sdp.media):
                rtp_port = media.port
                rtcp_port = media.rtcp_port or (media.port + 1 if media.port else 0)
                rtp, _ = await loop.create_datagram_endpoint(
                    self._protocol(index, rtcp=False), local_addr=(self.host, rtp_port)
                )
                rtcp, _ = await loop.create_datagram_endpoint(
                    self._protocol(index, rtcp=True), local_addr=(self.host, rtcp_port)
                )
                self._transports[index] = (rtp, rtcp)
                self.ports[index] = (rtp.get_extra_info("sockname")[1], rtcp.get_extra_info("sockname")[1])
                widen_receive_buffer(rtp.get_extra_info("socket"))
        except OSError:
            await self.stop()
            raise
        log.info(
            "rtp input %s: listening on %s",
            self.name,
            ", ".join(f"{m.kind} {self.ports[i][0]}/{self.ports[i][1]}" for i, m in enumerate(self.sdp.media)),
        )
        self._timer = loop.call_later(TICK_SECONDS, self._tick)

    def _protocol(self, index: int, rtcp: bool) -> Callable[[], Datagrams]:
        if rtcp:
            return lambda: Datagrams(lambda data, addr: self._on_rtcp(index, data, addr))
        return lambda: Datagrams(lambda data, addr: self._on_rtp(index, data, addr))

    def _publish(self, now: float) -> bool:
        if now < self._retry_at:
            return False
        try:
            self.publisher = self.hub.publish(self.name)
        except StreamBusy as e:
            log.warning("rtp input %s: %s; packets are dropped until it is free", self.name, e)
            self._retry_at = now + PUBLISH_RETRY
            return False
        self.sessions += 1
        clock = SessionClock()
        ssrc = secrets.randbits(32) | 1
        self.receivers = {
            i: TrackReceiver(
                m,
                self.publisher,
                f"input {self.name}",
                clock,
                ssrc,
                rtp_source=self._rtp_sources[i],
                rtcp_source=self._rtcp_sources[i],
                repair_bitrate=self.repair_bitrate,
            )
            for i, m in enumerate(self.sdp.media)
        }
        log.info("rtp input %s: packets arriving, stream published", self.name)
        return True

    def _on_rtp(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        now = self.clock()
        if self.publisher is None:
            if not self._rtp_sources[index].admit(addr, now):
                self.strangers += 1
                if worth_logging(self.strangers - 1, self.strangers):
                    log.warning(
                        "rtp input %s: dropped a datagram from a foreign source (%d so far): RTP from %s:%d, "
                        "the source is %s",
                        self.name,
                        self.strangers,
                        addr[0],
                        addr[1],
                        self._rtp_sources[index].describe(),
                    )
                return
            self._last_rx = now
            if not self._publish(now):
                return
        try:
            if self.receivers[index].on_rtp(data, now, self.wall_clock(), addr):
                self._last_rx = now  # strangers' datagrams keep no session alive
        except (RtpError, H264Error) as e:
            self._fail(str(e))
        except Exception as e:
            self._fail(f"internal error: {e!r}", e)

    def _on_rtcp(self, index: int, data: bytes, addr: tuple[str, int]) -> None:
        now = self.clock()
        receiver = self.receivers.get(index)
        if receiver is None:
            # Learn where the sender's RTCP comes from even before its RTP (ffmpeg sends its
            # first report first); it is answered only once RTP from the same host arrives.
            self._rtcp_sources[index].admit(addr, now)
            return
        try:
            receiver.on_rtcp(data, now, addr)
        except Exception as e:
            self._fail(f"internal error: {e!r}", e)

    def _tick(self) -> None:
        if self.closed:
            return
        now = self.clock()
        if self.publisher is not None:
            if now - self._last_rx > self.timeout:
                self._unpublish(f"no RTP for {self.timeout:g} s")
            else:
                try:
                    wall = self.wall_clock()
                    for index, receiver in self.receivers.items():
                        for rtcp in receiver.tick(now, wall):
                            # Only to the RTP source's host, where its RTCP comes from.
                            peer = self._rtcp_sources[index].current
                            if peer is not None:
                                self._transports[index][1].sendto(rtcp, peer)
                except (RtpError, H264Error) as e:
                    self._fail(str(e))
                except Exception as e:  # logged and reset: the timer and its timeout go on
                    self._fail(f"internal error in the input's timer: {e!r}", e)
        self._timer = asyncio.get_running_loop().call_later(TICK_SECONDS, self._tick)

    def _fail(self, reason: str, error: BaseException | None = None) -> None:
        if error is None:
            log.warning("rtp input %s: session reset: %s", self.name, reason)
        else:
            log.error("rtp input %s: session reset: %s", self.name, reason, exc_info=error)
        self.on_error()
        self._unpublish(reason)

    def _unpublish(self, reason: str) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is None:
            return
        for receiver in self.receivers.values():
            try:
                receiver.finish(self.clock(), self.wall_clock())
            except Exception as e:  # the stream ends anyway; what was buffered is lost
                log.warning("rtp input %s: flushing a track failed: %r", self.name, e)
        self.receivers = {}
        publisher.close()
        log.info("rtp input %s: stream unpublished (%s)", self.name, reason)

    async def stop(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._unpublish("server stopping")
        for rtp, rtcp in self._transports.values():
            rtp.close()
            rtcp.close()
        self._transports.clear()

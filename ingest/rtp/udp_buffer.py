"""The kernel's receive buffer of an RTP socket. A sender such as GStreamer's rtspclientsink
sends a keyframe's hundred packets in one burst; while the event loop is busy elsewhere they
wait in this buffer, and what does not fit is lost (on loopback too) and costs the viewers
every frame up to the next keyframe. Linux caps SO_RCVBUF at net.core.rmem_max, 208 KiB by
default: about 90 such packets. A process with CAP_NET_ADMIN (root, as a media server
often runs) may go past the cap with SO_RCVBUFFORCE; otherwise the shortfall is logged
once, naming the setting to raise."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Protocol

from .config import UDP_RECEIVE_BUFFER

log = logging.getLogger("mediacore.rtp")

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
"""Linux's option to set SO_RCVBUF past net.core.rmem_max (needs CAP_NET_ADMIN); Python's
socket module does not name it."""

_warned = False


class Sockopts(Protocol):
    """A socket, or the wrapper asyncio hands out for a transport's socket."""

    def getsockopt(self, level: int, option: int, /) -> int: ...

    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...


def granted_receive_buffer(sock: Sockopts) -> int:
    """Bytes of data the kernel lets wait in `sock`: Linux reports twice what was asked
    for (the other half is its bookkeeping), other systems what was asked for."""
    reported = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return reported // 2 if sys.platform.startswith("linux") else reported


def widen_receive_buffer(sock: Sockopts, wanted: int = UDP_RECEIVE_BUFFER) -> int:
    """Ask for `wanted` bytes of receive buffer on `sock`, past the system's cap where the
    process may; returns what was granted and warns (once per process) when it is less."""
    global _warned
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
    if granted_receive_buffer(sock) < wanted and SO_RCVBUFFORCE is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, wanted)
        except OSError:
            pass  # not permitted: the capped size stays
    granted = granted_receive_buffer(sock)
    if granted < wanted and not _warned:
        _warned = True
        log.warning(
            "RTP sockets get a %d-byte receive buffer, not the %d wanted: a keyframe's burst "
            "may overflow it while the server is busy, and the packets lost cost frames; "
            "raise net.core.rmem_max (sysctl) to at least %d",
            granted,
            wanted,
            wanted,
        )
    return granted

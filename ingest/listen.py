"""Opening an ingest listener: the one way the RTMP and RTSP servers listen, plain or inside
TLS (RTMPS, RTSPS) with the TLS handshake bounded."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable


async def listen(
    protocol: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    tls_handshake_timeout: float,
) -> asyncio.Server:
    """A server on `host`:`port` (0: a free port) making `protocol()` per connection; with
    `tls`, connections are handed over only once their handshake completed, which may take
    `tls_handshake_timeout` seconds at most."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        protocol,
        host,
        port,
        reuse_address=True,
        ssl=tls,
        ssl_handshake_timeout=tls_handshake_timeout if tls is not None else None,
    )


async def adopt(
    protocol: Callable[[], asyncio.BaseProtocol],
    sock: socket.socket,
    tls: ssl.SSLContext | None,
    tls_handshake_timeout: float,
) -> None:
    """Serve one connection accepted elsewhere (the parent of `mediacore serve --workers N`
    hands each publisher's socket to a worker) as if `listen()`'s server had accepted it."""
    loop = asyncio.get_running_loop()
    await loop.connect_accepted_socket(
        protocol, sock, ssl=tls, ssl_handshake_timeout=tls_handshake_timeout if tls is not None else None
    )

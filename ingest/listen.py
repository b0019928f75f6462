"""Opening an ingest listener: the one way the RTMP and RTSP servers listen, plain or inside
TLS (RTMPS, RTSPS) with the TLS handshake bounded."""

from __future__ import annotations

import asyncio
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

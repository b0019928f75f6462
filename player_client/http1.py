"""A minimal HTTP/1.1 client connection for simulated viewers: one request at a time on one
keep-alive connection, responses read by httptools, bodies kept whole.

Why not aiohttp: a simulated LL-HLS viewer makes about ten requests a second, and thousands of
them share the cores of the server they load. aiohttp's client request and response objects
cost several times the work of writing one request line and parsing one response head, so
the load generator, not the server, filled the cores (docs/performance.md, edge). This does
only what a viewer needs: GET, Content-Length or chunked bodies (httptools decodes both),
keep-alive, a reconnect after the server closes, a timeout per request.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

REQUEST_TIMEOUT = 10.0
"""Seconds one request may take, blocking reloads included: the longest hls.js waits for a
blocking playlist request (HLS-RULES B13, `min(max(3 x PART-TARGET, 0.8 x TD), 10 s)`)."""


class _Response:
    """httptools callbacks for the responses of one connection."""

    __slots__ = ("parser", "chunks", "done", "keep_alive")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.done: asyncio.Future[tuple[int, bytes]] | None = None
        self.keep_alive = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.chunks)
        self.chunks = []
        self.keep_alive = self.parser.should_keep_alive()
        done, self.done = self.done, None
        if done is not None and not done.done():
            done.set_result((self.parser.get_status_code(), body))


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.response = _Response()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.response.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.fail(ConnectionError(f"unreadable response: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.fail(ConnectionError("connection closed"))

    def fail(self, error: Exception) -> None:
        done, self.response.done = self.response.done, None
        if done is not None and not done.done():
            done.set_exception(error)
        if self.transport is not None:
            self.transport.close()


class Http1Client:
    """GETs to one host:port, one at a time, on a connection kept open between them."""

    def __init__(self, host: str, port: int, timeout: float = REQUEST_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._head = b"HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port)
        self._protocol: _Protocol | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """Kept from the first request: asking asyncio for the running loop checks the process id."""

    async def get(self, target: str) -> tuple[int, bytes]:
        """(status, body) of `GET target` (a path and query); ConnectionError or TimeoutError
        when the connection fails or the answer takes longer than `timeout`."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        protocol = self._protocol
        if protocol is None or protocol.transport is None or not protocol.response.keep_alive:
            if protocol is not None and protocol.transport is not None:
                protocol.transport.close()
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            self._protocol = protocol
        assert protocol.transport is not None
        done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        protocol.response.done = done
        protocol.transport.write(b"GET %s %s" % (target.encode(), self._head))
        timer = loop.call_later(self.timeout, protocol.fail, TimeoutError(f"no answer in {self.timeout} s"))
        try:
            return await done
        finally:
            timer.cancel()

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

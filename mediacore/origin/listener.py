"""Listening sockets for the origin's aiohttp apps, with the bounds aiohttp lacks.

aiohttp limits the size of a request head (line, field, header count) and closes idle
keep-alive connections, but it has no deadline for *receiving* a request head: a slowloris
peer that sends one header byte every few seconds holds its connection (and a file
descriptor) for as long as it likes. `Listener` serves an app through a `RequestHandler`
subclass that adds, per connection:

- a head deadline: a connection must complete a request head within `header_timeout` of
  connecting, or of the first byte of a later request; otherwise it is closed;
- admission: at most `max_connections` open at once, and `max_connections_per_ip` from one
  TCP peer address (X-Forwarded-For plays no part; trusted proxies are exempt); a refused
  connection gets a one-line 429/503 and is closed before its request is read.

Every refusal is counted through `on_refused(reason)` and logged (the first ten, then every
power of two, so a flood cannot flood the log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

log = logging.getLogger("mediacore.http")

PER_IP = "per_ip"
MAX_CONNECTIONS = "max_connections"
HEADER_TIMEOUT = "header_timeout"
REFUSAL_LOG_EVERY_UNTIL = 10
"""Refusals of one kind logged one by one; past it, only every power of two."""


def _refusal(status: str, text: str) -> bytes:
    body = text.encode() + b"\n"
    head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


REFUSALS = {
    PER_IP: _refusal("429 Too Many Requests", "too many connections from your address"),
    MAX_CONNECTIONS: _refusal("503 Service Unavailable", "the server has too many connections"),
}


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    header_timeout: float
    """Seconds to complete a request head (0: no deadline)."""
    keepalive_timeout: float
    """Seconds an idle keep-alive connection stays open."""
    max_connections_per_ip: int = 0
    """Connections open at once from one peer address (0: no limit)."""
    max_connections: int = 0
    """Connections open at once in all (0: no limit)."""


class ConnectionGuard:
    """Who may connect: open connections per peer address and in all. Pure bookkeeping; the
    handler calls admit() when a connection arrives and release() when an admitted one goes."""

    def __init__(
        self, name: str, limits: ListenerLimits, exempt: Collection[str], on_refused: Callable[[str], None]
    ) -> None:
        self.name = name
        self.limits = limits
        self.exempt = exempt
        self.on_refused = on_refused
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def admit(self, address: str) -> str | None:
        """None if `address` may open one more connection (it is then counted), else the reason."""
        limits = self.limits
        if limits.max_connections and self.open >= limits.max_connections:
            return MAX_CONNECTIONS
        held = self.by_address.get(address, 0)
        if limits.max_connections_per_ip and held >= limits.max_connections_per_ip and address not in self.exempt:
            return PER_IP
        self.open += 1
        self.by_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        held = self.by_address.get(address, 0) - 1
        if held > 0:
            self.by_address[address] = held
        else:
            self.by_address.pop(address, None)

    def refuse(self, reason: str, address: str) -> None:
        """Count and (rate-limited) log one refused or timed-out connection."""
        n = self.refused.get(reason, 0) + 1
        self.refused[reason] = n
        self.on_refused(reason)
        if n <= REFUSAL_LOG_EVERY_UNTIL or n & (n - 1) == 0:
            what = {
                PER_IP: f"more than {self.limits.max_connections_per_ip} connections from one address",
                MAX_CONNECTIONS: f"more than {self.limits.max_connections} connections",
                HEADER_TIMEOUT: f"no complete request head within {self.limits.header_timeout:g} s",
            }[reason]
            log.warning("%s %s: connection closed: %s (%d so far)", self.name, address, what, n)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with admission and a request-head deadline.

    Reads `_request_count`, `_request_in_progress`, `_upgraded` and `_payload_parser` of
    aiohttp's RequestHandler (aiohttp is pinned; tests/test_admin.py exercises each path)."""

    __slots__ = ("_guard", "_address", "_admitted", "_head_timeout", "_head_timer")

    def __init__(self, manager: Server, guard: ConnectionGuard, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address = "?"
        self._admitted = False
        self._head_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        reason = self._guard.admit(self._address)
        if reason is not None:
            self._guard.refuse(reason, self._address)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(REFUSALS[reason])
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._disarm()
        self._guard.release(self._address)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:
            self._disarm()  # a head is complete; what follows is its body or the next request
        elif (
            self._head_timer is None
            and not self._request_in_progress
            and not self._upgraded
            and self._payload_parser is None
        ):
            self._arm()  # the first bytes of a new request head

    def _arm(self) -> None:
        if self._head_timeout > 0 and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._request_in_progress or not self._admitted:
            return
        self._guard.refuse(HEADER_TIMEOUT, self._address)
        self.force_close()


class Listener:
    """One aiohttp app on one TCP address, through GuardedRequestHandler."""

    def __init__(
        self,
        app: web.Application,
        name: str,
        limits: ListenerLimits,
        exempt: Collection[str] = (),
        on_refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.guard = ConnectionGuard(name, limits, exempt, on_refused)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Listen on host:port (0: a free port); returns the port. `reuse_port`: beside the
        other workers of `mediacore serve --workers N` (SO_REUSEPORT: the kernel spreads
        connections over them)."""
        options: dict[str, Any] = {"access_log": None, "keepalive_timeout": self.limits.keepalive_timeout}
        runner = web.AppRunner(self.app, handle_signals=False, **options)
        await runner.setup()
        manager = runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()
        guard, header_timeout = self.guard, self.limits.header_timeout

        def connection() -> GuardedRequestHandler:
            return GuardedRequestHandler(manager, guard, header_timeout, loop=loop, **options)

        try:
            self._server = await loop.create_server(
                connection, host, port, reuse_address=True, reuse_port=reuse_port or None
            )
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening, then close every connection (aiohttp's shutdown)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""The fast path of the edge's public listener: cache hits written from pre-rendered bytes by a
minimal asyncio Protocol; everything else handed, connection and all, to the aiohttp app.

Why: a cache hit of a live playlist through aiohttp costs ~50 us of a core, half of it in
aiohttp's request and response objects (docs/performance.md, edge); the answer to a hit is
the same bytes every time but for Date and Age.

What it answers itself is deliberately narrow: a read made only of complete GET / HEAD
requests without a body, no longer than aiohttp's own line limit, whose paths are plain
(no percent-escapes, no dot segments) with no query but LL-HLS delivery directives
(`_HLS_msn`, `_HLS_part`, `_HLS_skip`), and whose answers are the cache's. Anything else in
a read (a token, /metrics, a malformed directive, a blocked request past its bounds, a
protected entry, a WebSocket upgrade, a parse error, a request split over reads) hands the
connection to aiohttp with that read, before anything of it was answered, and aiohttp keeps
it: its limits, its errors and `EdgeNode.handle`'s rules apply as if the fast path did not
exist.

A read of one request that misses (a blocked playlist reload waiting for its part, a
preload-hint part not published yet, a plain miss) is parked: anything more its client sends
waits unanswered, and it joins the other requests parked on the same cache key, for which one fetch
(`EdgeNode.obtain`, collapsed with the app's) is under way. When that fetch ends, its answer
is rendered once and written to every parked connection: thousands of viewers blocked on
the next part cost one render and a write each, not an aiohttp response each.

`frame` (the read -> request heads) and `render` are sans-I/O; `FastProtocol` is the shell.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, cast

import httptools
import lru

from edge.cache import CachedResponse
from edge.keys import EdgeRequest
from edge.limits import BlockedRequests

log = logging.getLogger("mediacore.edge")

MAX_FAST_READ = 8190
"""Longest read the fast path parses: aiohttp's max_line_size and max_field_size, so any request
that could break one of aiohttp's size limits is aiohttp's to refuse."""
MAX_PIPELINED = 4
"""Requests of one read the fast path answers together (all written at once, before the next
read is taken); a longer pipeline goes to the app, which writes one answer at a time."""
PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")
"""Paths whose raw form is the decoded form aiohttp routes on (no escapes, no query)."""
DIRECTIVES_QUERY = re.compile(r"_HLS_[a-z]+=[A-Za-z0-9]*(?:&_HLS_[a-z]+=[A-Za-z0-9]*)*")
"""Queries made only of LL-HLS delivery directives, unescaped (a token or anything else: the app)."""
FRAMED_READ_BYTES = 1024
"""Longest read whose framing is remembered (a player's request is a few hundred bytes)."""
FRAMED_READS = 4096
"""Distinct reads whose framing is remembered, least recently used first out: a live
audience sends the same bytes again and again (the same player asking for the same playlist
or part), and the framing of a read depends on nothing else. At most FRAMED_READS x
FRAMED_READ_BYTES (4 MiB) of keys per worker."""
IDLE_SECONDS = 75.0
"""A keep-alive connection idle this long is closed: aiohttp's keepalive_timeout."""
MAX_RENDERED = 8
"""Accept-Encoding values whose answer an entry keeps rendered: players send one or two; a client
making up new ones gets its answer rendered per request instead of growing the entry."""
SWEEP_SECONDS = 5.0
"""How often idle connections are looked for (one timer for all of them, none per request)."""


Got = tuple[CachedResponse, str] | Exception
"""An entry and its X-Cache state (HIT, MISS, STALE), or the upstream failure to answer 502."""


class Node(Protocol):
    """What the fast path asks of the edge (`edge.server.EdgeNode`): its rules, not copies of them."""

    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    blocked: BlockedRequests

    def plain_hit(self, path: str) -> CachedResponse | None: ...

    async def plain_answer(self, path: str) -> Got | None: ...

    def fast_request(self, path: str, raw_query: str) -> EdgeRequest | None: ...

    def fresh_entry(self, wanted: EdgeRequest) -> CachedResponse | None: ...

    def upstream_of(self, path: str, wanted: EdgeRequest) -> str: ...

    def client_of(self, peer: str | None, forwarded: str) -> str | None: ...

    def protected(self, entry: CachedResponse) -> bool: ...

    async def obtain(self, key: str, path: str, upstream_path: str) -> Got: ...

    def answer(
        self, path: str, entry: CachedResponse, accept_encoding: str, token: str | None
    ) -> tuple[dict[str, str], bytes]: ...

    def failure(self, error: Exception) -> tuple[int, dict[str, str], bytes]: ...

    def count_hit(self) -> None: ...

    def count_out(self, body_bytes: int) -> None: ...

    def count_joined(self) -> None: ...


@dataclass(slots=True)
class Head:
    """What the fast path needs of one request. Not frozen: a frozen dataclass sets each field
    through object.__setattr__, and one of these is made per read framed. Read-only all the
    same: `frame` hands the same heads to every read of the same bytes."""

    method: bytes
    path: str
    accept_encoding: str
    keep_alive: bool
    connection: bytes = b""
    """The Connection header line the answer carries: none for HTTP/1.1 keep-alive (the default),
    `close` when the connection ends after it, `keep-alive` for an HTTP/1.0 client that asked."""
    query: str = ""
    """The delivery directives as received (`_HLS_msn=7&_HLS_part=2`), empty for none."""
    forwarded: str = ""
    """The X-Forwarded-For values, joined: who a trusted proxy asks for."""


class _Collector:
    """httptools callbacks for the heads of one read."""

    __slots__ = ("url", "accept", "forwarded", "bodied", "begun", "heads", "parser")

    def __init__(self) -> None:
        self.url = b""
        self.accept: list[bytes] = []
        self.forwarded: list[bytes] = []
        self.bodied = False
        self.begun = 0
        self.heads: list[Head | None] = []  # None: a request the fast path does not answer
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.begun += 1
        self.url = b""
        self.accept = []
        self.forwarded = []
        self.bodied = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"accept-encoding":
            self.accept.append(value)
        elif lowered == b"x-forwarded-for":
            self.forwarded.append(value)
        elif lowered in (b"content-length", b"transfer-encoding", b"expect", b"upgrade"):
            self.bodied = self.bodied or lowered != b"content-length" or value.strip() != b"0"

    def on_body(self, _body: bytes) -> None:
        self.bodied = True

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # cut only once parsing is over
        method = parser.get_method()
        path, mark, query = self.url.decode("latin-1").partition("?")
        plain = PLAIN_PATH.fullmatch(path) is not None and not _dot_segments(path)
        plain = plain and (not mark or DIRECTIVES_QUERY.fullmatch(query) is not None)
        if method in (b"GET", b"HEAD") and plain and not self.bodied:
            accept = b",".join(self.accept).decode("latin-1")
            keep = parser.should_keep_alive()
            if not keep:
                connection = b"Connection: close\r\n"
            else:
                connection = b"Connection: keep-alive\r\n" if parser.get_http_version() == "1.0" else b""
            forwarded = b", ".join(self.forwarded).decode("latin-1")
            self.heads.append(Head(method, path, accept, keep, connection, query, forwarded))
        else:
            self.heads.append(None)


def _dot_segments(path: str) -> bool:
    """`//`, `/./`, `/../` (or one at the end): aiohttp would route on a normalised path."""
    marked = path + "/"
    return "//" in marked or "/./" in marked or "/../" in marked


_framed: lru.LRU = lru.LRU(FRAMED_READS)


def frame(read: bytes) -> list[Head] | None:
    """The requests of one read when every one of them (MAX_PIPELINED at most) is a complete,
    bodiless GET or HEAD of a plain path and nothing follows the last, or when the read is one
    such request with delivery directives; else None (the read goes to aiohttp whole).
    Remembered per read (FRAMED_READS): the heads returned are shared, and read-only."""
    if len(read) > FRAMED_READ_BYTES:
        return frame_afresh(read)
    try:
        heads: list[Head] | None = _framed[read]
    except KeyError:
        heads = _framed[read] = frame_afresh(read)
    return heads if heads is None else list(heads)


def frame_afresh(read: bytes) -> list[Head] | None:
    """`frame` without the memory: parses `read` every time."""
    if not read or len(read) > MAX_FAST_READ:
        return None
    collector = _Collector()
    parser = collector.parser
    assert parser is not None
    try:
        parser.feed_data(read)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None  # also a request after one with Connection: close (llhttp refuses it)
    finally:
        # The parser holds the collector's callbacks and the collector the parser: a cycle
        # per read that only the cyclic collector would free (about 10,000 objects a second
        # per worker under 1,000 LL-HLS viewers). Cut, both go by reference counting.
        collector.parser = None
    if collector.begun != len(collector.heads) or not collector.heads or len(collector.heads) > MAX_PIPELINED:
        return None  # a request left incomplete at the end of the read, or a long pipeline
    heads = [h for h in collector.heads if h is not None]
    if len(heads) != len(collector.heads) or (len(heads) > 1 and any(h.query for h in heads)):
        return None  # delivery directives come one request per read, as players send them
    return heads


def render_head(status: int, headers: dict[str, str], length: int) -> bytes:
    """A response's status line and headers but Date, Age and the blank line: rendered once per
    cached entry and variant, then reused by every hit."""
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def render(head: bytes, date: bytes, connection: bytes, age: int | None = None, state: str = "") -> bytes:
    """The bytes before the body: the pre-rendered head plus what changes per request (the
    Connection line; an answer from the cache has an Age and an X-Cache state)."""
    cache = b"" if age is None else b"Age: %d\r\nX-Cache: %s\r\n" % (age, state.encode())
    return b"%sDate: %s\r\n%s%s\r\n" % (head, date, cache, connection)


class Dates:
    """The Date header, formatted once per second of `wall_clock`."""

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self.wall_clock = wall_clock
        self._second = -1
        self._text = b""

    def now(self) -> bytes:
        second = int(self.wall_clock())
        if second != self._second:
            self._second = second
            self._text = formatdate(second, usegmt=True).encode()
        return self._text


@dataclass(slots=True)
class Parked:
    """A connection whose one request waits for the fetch of `key`."""

    protocol: FastProtocol
    head: Head
    read: bytes
    """The read that asked: the app gets it whole if the answer turns out to be the app's."""
    key: str
    admitted: bool
    """Admitted as a blocked request for `client` (`EdgeNode.blocked`): released when answered or gone."""
    client: str | None = None


class FastListener:
    """The connections of one public listener: creates their protocols, answers their reads,
    parks the ones waiting for a fetch, closes idle ones."""

    def __init__(self, node: Node, aiohttp_factory: Callable[[], asyncio.Protocol]) -> None:
        self.node = node
        self.aiohttp_factory = aiohttp_factory
        self.dates = Dates(node.wall_clock)
        self.connections: set[FastProtocol] = set()
        self.parked: dict[str, list[Parked]] = {}
        """Cache key -> the connections waiting for its fetch, in arrival order."""
        self.fetches: dict[str, asyncio.Task[None]] = {}
        """Cache key -> the task fetching it for the parked connections (cancelled on close)."""
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> FastProtocol:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self.sweep)
        return FastProtocol(self)

    def sweep(self) -> None:
        deadline = time.monotonic() - IDLE_SECONDS
        for connection in [c for c in self.connections if c.last_read < deadline and c.idle]:
            connection.close()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self.sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self.fetches.values()):
            task.cancel()
        for connection in list(self.connections):
            connection.close()

    def hits(self, heads: list[Head]) -> list[bytes] | None:
        """The answer to a read whose every request is a fresh hit of a plain path, at once;
        None otherwise."""
        node = self.node
        got: list[Got] = []
        for head in heads:
            entry = node.plain_hit(head.path) if not head.query else None
            if entry is None:
                return None
            got.append((entry, "HIT"))
        out, body_bytes = self.render_all(heads, got)
        for _ in heads:
            node.count_hit()
        node.count_out(body_bytes)
        return out

    def one(self, protocol: FastProtocol, transport: asyncio.Transport, head: Head, read: bytes) -> None:
        """A read of one request, as `EdgeNode.handle` answers it: a fresh entry at once; a
        miss (a blocked reload admitted by `EdgeNode.blocked` first) parked until the fetch of
        its key ends; anything else (a protected entry, a refused blocked request) the app's."""
        node = self.node
        wanted = node.fast_request(head.path, head.query)
        if wanted is None:
            protocol.hand_over(transport, read)
            return
        entry = node.fresh_entry(wanted)
        if entry is not None:
            if node.protected(entry):
                protocol.hand_over(transport, read)
                return
            node.count_hit()
            out, body_bytes = self.render_all([head], [(entry, "HIT")])
            node.count_out(body_bytes)
            protocol.send(transport, out, head.keep_alive)
            return
        parked = Parked(protocol, head, read, wanted.key, wanted.directives.blocking)
        if parked.admitted:
            parked.client = protocol.client(transport, head.forwarded)
            if node.blocked.admit(parked.client, wanted.key) is not None:
                protocol.hand_over(transport, read)  # the app refuses it, with its status and counter
                return
        protocol.parked = parked  # still read, so a client going away is seen and its admission released
        waiting = self.parked.get(wanted.key)
        if waiting is not None:
            waiting.append(parked)
            node.count_joined()
            return
        self.parked[wanted.key] = [parked]
        fetch = self._fetch(wanted.key, head.path, node.upstream_of(head.path, wanted))
        self.fetches[wanted.key] = asyncio.get_running_loop().create_task(fetch)

    async def _fetch(self, key: str, path: str, upstream_path: str) -> None:
        """One fetch for every connection parked on `key`; its answer rendered once and written
        to each of them (or, for a protected entry, each read handed to the app)."""
        got: Got | None = None
        try:
            got = await self.node.obtain(key, path, upstream_path)
        except Exception:  # a fault of the edge's own: the app answers these requests, as any other
            log.exception("edge: fetch of %s for parked requests failed", key)
        finally:
            self.fetches.pop(key, None)
            waiting = self.parked.pop(key, [])
            for parked in waiting:
                self.unpark(parked)
        live = [(p, t) for p in waiting if (t := p.protocol.transport) is not None and not t.is_closing()]
        if got is None or (not isinstance(got, Exception) and self.node.protected(got[0])):
            for parked, transport in live:
                parked.protocol.hand_over(transport, parked.read)
            return
        body_bytes = 0
        rendered: dict[tuple[str, bytes, bytes], tuple[list[bytes], int]] = {}  # one render per variant
        for parked, transport in live:
            head = parked.head
            variant = (head.accept_encoding, head.method, head.connection)
            answer = rendered.get(variant)
            if answer is None:
                answer = rendered[variant] = self.render_all([head], [got])
            body_bytes += answer[1]
            parked.protocol.send(transport, answer[0], head.keep_alive)
            parked.protocol.resume()
        self.node.count_out(body_bytes)

    def unpark(self, parked: Parked) -> None:
        """`parked` no longer waits: its blocked-request admission is released (once)."""
        parked.protocol.parked = None
        if parked.admitted:
            parked.admitted = False
            self.node.blocked.release(parked.client, parked.key)

    def forget(self, parked: Parked) -> None:
        """A parked connection went away before its answer."""
        waiting = self.parked.get(parked.key)
        if waiting is not None and parked in waiting:
            waiting.remove(parked)
        self.unpark(parked)

    def render_all(self, heads: list[Head], got: list[Got]) -> tuple[list[bytes], int]:
        """The bytes answering every request of a read and the bytes of cached bodies among them
        (`mediacore_edge_bytes_out`, HEAD included as the app counts it)."""
        out: list[bytes] = []
        body_bytes = 0
        now, date = self.node.clock(), self.dates.now()
        for head, answer in zip(heads, got, strict=True):
            if isinstance(answer, Exception):
                status, headers, body = self.node.failure(answer)
                out.append(render(render_head(status, headers, len(body)), date, head.connection))
            else:
                entry, state = answer
                prefix, body = self._rendered(head, entry)
                out.append(render(prefix, date, head.connection, int(entry.age(now)), state))
                body_bytes += len(body)
            if head.method == b"GET":
                out.append(body)
        return out, body_bytes

    def _rendered(self, head: Head, entry: CachedResponse) -> tuple[bytes, bytes]:
        """The entry's pre-rendered head and body for this request's Accept-Encoding (`EdgeNode.answer`
        picks identity or gzip), made at the first answer with that header and reused after."""
        rendered = entry.rendered.get(head.accept_encoding)
        if rendered is None:
            headers, body = self.node.answer(head.path, entry, head.accept_encoding, None)
            rendered = (render_head(entry.status, headers, len(body)), body)
            if len(entry.rendered) < MAX_RENDERED:
                entry.rendered[head.accept_encoding] = rendered
        return rendered


class FastProtocol(asyncio.Protocol):
    """One public connection: hits answered at once, misses once the upstream answered
    (reading nothing more meanwhile, so answers stay in order), until a read needs the app,
    which then owns the connection (`transport.set_protocol`) and gets that read."""

    def __init__(self, listener: FastListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.last_read = time.monotonic()
        self.pending: asyncio.Task[None] | None = None
        """The answer to a pipelined read with a miss, under way."""
        self.parked: Parked | None = None
        """The one request of a read waiting for a fetch (`FastListener.one`)."""
        self.held = b""
        """Bytes read while parked (a pipelined request): answered after the parked one, in order."""
        self._client: tuple[str, str | None] | None = None
        self.write_paused = False

    def client(self, transport: asyncio.Transport, forwarded: str) -> str | None:
        """Who this connection's blocked requests are admitted for (`EdgeNode.client_of`), worked
        out once per X-Forwarded-For value it sends, not once per request."""
        if self._client is None or self._client[0] != forwarded:
            peer = transport.get_extra_info("peername")
            self._client = (forwarded, self.listener.node.client_of(peer[0] if peer else None, forwarded))
        return self._client[1]

    @property
    def idle(self) -> bool:
        """Waiting for the client, not for an answer of the edge's."""
        return self.pending is None and self.parked is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.listener.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.connections.discard(self)
        self.transport = None
        if self.pending is not None:
            self.pending.cancel()
        if self.parked is not None:
            self.listener.forget(self.parked)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.last_read = time.monotonic()
        if self.parked is not None:
            self.held += data
            transport.pause_reading()  # until the parked request is answered: answers stay in order
            return
        heads = frame(data)
        if heads is None:
            self.hand_over(transport, data)
            return
        if len(heads) == 1:
            self.listener.one(self, transport, heads[0], data)
            return
        out = self.listener.hits(heads)
        if out is not None:
            self.send(transport, out, heads[-1].keep_alive)
            return
        transport.pause_reading()
        self.pending = asyncio.get_running_loop().create_task(self._answer_later(heads, data))

    async def _answer_later(self, heads: list[Head], data: bytes) -> None:
        node = self.listener.node
        got: list[Got] = []
        for head in heads:
            answer = await node.plain_answer(head.path)
            if answer is None:
                break
            got.append(answer)
        self.pending = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if len(got) < len(heads):
            self.hand_over(transport, data)  # nothing of this read was answered: the app answers all of it
            return
        self.resume()
        out, body_bytes = self.listener.render_all(heads, got)
        node.count_out(body_bytes)
        self.send(transport, out, heads[-1].keep_alive)

    def send(self, transport: asyncio.Transport, out: list[bytes], keep_alive: bool) -> None:
        transport.writelines(out)
        if not keep_alive:
            transport.close()

    def resume(self) -> None:
        """Reading again once an answer went out, unless the client is not reading its answers."""
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self.write_paused and self.idle:
            transport.resume_reading()
            held, self.held = self.held, b""
            if held:
                self.data_received(held)

    def hand_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """The app owns the connection from here, starting with `data` (a read nothing of which
        was answered) and whatever the client sent after it while it was parked."""
        self.listener.connections.discard(self)
        self.transport = None
        data, self.held = data + self.held, b""
        transport.resume_reading()  # the app paces the connection from here on, starting unpaused
        protocol = self.listener.aiohttp_factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(data)

    def pause_writing(self) -> None:
        """A client that does not read what it asked for is not read from either."""
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.resume()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

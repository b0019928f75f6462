"""The recommender in a process of its own.

Applying events to the interaction tables and rebuilding the models is Python and numpy
work: at 50,000 events/s it held the serving process's GIL 35–40 ms a second in a worker
thread, and every playlist answer falling in that time waited for it. So the `Recommender`
(plugins/audience/cf.py, unchanged and sans-I/O) lives in a child process, and the plugin
talks to it over a socket pair:

- events, deletions, expiry and segments go one way, in order, without replies (the events
  batched up to FLUSH_RECORDS per message, so packing them costs the event loop ~80 µs at a
  time; past MAX_BUFFERED_BYTES waiting in the socket they are dropped and counted rather
  than buffered without end);
- a refresh, a recommendation, "also bought", the stats and the privacy check are requests
  answered by id. The child answers lookups while a refresh runs in its own thread, so a
  request never waits for a rebuild.

Frames are a 4-byte big-endian length and a msgpack array; the child refuses a frame larger
than MAX_FRAME before reading it. The child exits when the socket closes (its parent
stopped or died). Run as `python -m plugins.audience.refresher FD METHOD RETENTION`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack

from .cf import Recommender, Record, record
from .events import Event

log = logging.getLogger("mediacore.audience")

FRAME = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024
"""Largest message either side accepts: the K-means labels of MAX_SEGMENT_USERS users fit
with room to spare; anything larger is a broken peer."""
FLUSH_RECORDS = 1000
"""Events packed into one message: small enough that packing one is ~80 µs of the event loop."""
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
"""Bytes waiting in the socket toward a child that does not keep up: past it events are dropped."""
STOP_TIMEOUT = 5.0
"""Seconds the child gets to exit after its socket closes before it is killed."""


class RecommenderGone(RuntimeError):
    """The child process ended: its requests fail until the plugin starts a new one."""


def _frame(message: list[Any]) -> bytes:
    data = msgpack.packb(message, use_bin_type=True)
    return FRAME.pack(len(data)) + data


# The child ---------------------------------------------------------------------------------------
class _Child:
    """Reads ops and requests from the socket; a refresh runs in a thread of its own."""

    def __init__(self, sock: socket.socket, method: str, retention: float) -> None:
        self.sock = sock
        self.recommender = Recommender(method, retention)
        self._send_lock = threading.Lock()
        self._refreshing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="refresh")

    def reply(self, rid: int, ok: bool, value: Any) -> None:
        frame = _frame([rid, ok, value])
        with self._send_lock:
            self.sock.sendall(frame)

    def run(self) -> None:
        reader = self.sock.makefile("rb")
        while True:
            head = reader.read(FRAME.size)
            if len(head) < FRAME.size:
                return  # the server closed the socket
            (size,) = FRAME.unpack(head)
            if size > MAX_FRAME:
                log.error("audience refresher: a %d-byte message exceeds %d bytes; exiting", size, MAX_FRAME)
                return
            body = reader.read(size)
            if len(body) < size:
                return
            rid, op, *args = msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=False)
            try:
                self.dispatch(rid, op, args)
            except Exception as e:
                log.exception("audience refresher: %s failed", op)
                if rid:
                    self.reply(rid, False, repr(e))

    def dispatch(self, rid: int, op: str, args: tuple[Any, ...]) -> None:
        r = self.recommender
        if op == "events":
            r.ingest_records(args[0])
        elif op == "forget":
            r.forget(args[0])
        elif op == "expire":
            r.expire(float(args[0]))
        elif op == "segments":
            r.set_segments(dict(args[0]))
        elif op == "refresh":
            self._refreshing.submit(self._refresh, rid, float(args[0]))
        elif op == "recommend":
            user, kind, n, allowed = args
            self.reply(rid, True, r.recommend(user, kind, n, set(allowed) if allowed is not None else None))
        elif op == "also":
            self.reply(rid, True, r.also_bought(args[0], args[1]))
        elif op == "holds":
            self.reply(rid, True, r.holds(args[0]))
        else:
            raise ValueError(f"unknown op {op!r}")

    def _refresh(self, rid: int, now: float) -> None:
        try:
            changed = self.recommender.refresh(now)
        except Exception as e:
            log.exception("audience refresher: the refresh failed")
            self.reply(rid, False, repr(e))
            return
        self.reply(rid, True, [changed, self.recommender.version, self.recommender.events_applied])


def main(argv: list[str]) -> None:
    fd, method, retention = int(argv[0]), argv[1], float(argv[2])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=fd)
    try:
        _Child(sock, method, retention).run()
    finally:
        sock.close()


# The server's side -------------------------------------------------------------------------------
class RecommenderProcess:
    """The plugin's handle on the child: the same operations as `Recommender`, the lookups
    awaited."""

    def __init__(self, method: str, retention: float) -> None:
        self.method = method
        self.retention = retention
        self.version = 0
        self.events_applied = 0
        self.dropped = 0
        """Events not sent because the child did not keep up (MAX_BUFFERED_BYTES)."""
        self.segments: dict[str, int] = {}
        self._pending: list[Record] = []
        self._unrefreshed = False
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def alive(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    @property
    def dirty(self) -> bool:
        return bool(self._pending) or self._unrefreshed

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                __name__,
                str(theirs.fileno()),
                self.method,
                repr(self.retention),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader), name="audience-refresher")

    async def stop(self) -> None:
        self._stopping = True
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._proc is not None and self._proc.returncode is None:
            try:
                await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = FRAME.unpack(await reader.readexactly(FRAME.size))
                if size > MAX_FRAME:
                    raise ValueError(f"a {size}-byte answer exceeds {MAX_FRAME} bytes")
                rid, ok, value = msgpack.unpackb(await reader.readexactly(size), raw=False)
                waiter = self._waiting.pop(rid, None)
                if waiter is None or waiter.done():
                    continue
                if ok:
                    waiter.set_result(value)
                else:
                    waiter.set_exception(RuntimeError(f"audience refresher: {value}"))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as e:
            if not self._stopping:
                code = self._proc.returncode if self._proc is not None else None
                log.error("audience: the recommender process ended (%s, exit %s)", e, code)
        finally:
            if self._writer is not None:
                self._writer.close()
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(RecommenderGone("the recommender process ended"))
            self._waiting.clear()

    # One way, in order --------------------------------------------------------------------------
    def _send(self, message: list[Any]) -> None:
        if not self.alive:
            raise RecommenderGone("the recommender process ended")
        assert self._writer is not None
        self._writer.write(_frame(message))

    def _flush(self) -> None:
        """Send the batched events (kept while the child is starting or gone: a new one is
        fed the store, and repeated ids are ignored)."""
        if not self._pending or not self.alive:
            return
        pending, self._pending = self._pending, []
        assert self._writer is not None
        if self._writer.transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            if not self.dropped:
                log.warning("audience: the recommender process is behind; dropping events for it")
            self.dropped += len(pending)
            return
        self._send([0, "events", pending])
        self._unrefreshed = True

    def ingest(self, events: Iterable[Event]) -> None:
        self._pending += [record(e) for e in events]
        if len(self._pending) >= FLUSH_RECORDS:
            self._flush()

    def forget(self, user: str) -> None:
        self._flush()
        self.segments.pop(user, None)
        self._send([0, "forget", user])
        self._unrefreshed = True

    def expire(self, before: float) -> None:
        self._flush()
        self._send([0, "expire", before])
        self._unrefreshed = True

    def set_segments(self, segments: dict[str, int]) -> None:
        self._flush()
        self.segments = dict(segments)
        self._send([0, "segments", self.segments])
        self._unrefreshed = True

    # Requests -------------------------------------------------------------------------------------
    async def _ask(self, op: str, *args: Any) -> Any:
        self._flush()
        rid = next(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[rid] = waiter
        try:
            self._send([rid, op, *args])
        except RecommenderGone:
            self._waiting.pop(rid, None)
            raise
        return await waiter

    async def refresh(self, now: float) -> bool:
        """Apply what was sent and rebuild the models (in the child); False when nothing changed."""
        self._flush()
        self._unrefreshed = False
        changed, self.version, self.events_applied = await self._ask("refresh", now)
        return bool(changed)

    async def recommend(self, user: str, kind: str, n: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        items = await self._ask("recommend", user, kind, n, sorted(allowed) if allowed is not None else None)
        return [(str(i), float(s)) for i, s in items]

    async def also_bought(self, product: str, n: int) -> list[tuple[str, float]]:
        return [(str(i), float(s)) for i, s in await self._ask("also", product, n)]

    async def holds(self, user: str) -> bool:
        """Whether any table, model or segment of the child still has the user (the privacy check)."""
        return bool(await self._ask("holds", user))


if __name__ == "__main__":
    main(sys.argv[1:])

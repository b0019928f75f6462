"""One worker's side of `mediacore serve --workers N`: the publisher connections its parent
hands over, and the stream names it holds in the run directory.

The parent sends each accepted ingest connection over a SOCK_SEQPACKET socket pair: one
message per connection, its body the listener's kind (`rtmp`, `rtsp`, `rtmps`, `rtsps`)
and the socket as SCM_RIGHTS ancillary data. The worker answers `ready` once it serves.
When the parent goes away the pair closes, and the worker drains and exits (`on_parent_gone`).

Names: a publish claims its name in the run directory (`LocalOwners`); the cluster's
sans-I/O `Registry` decides each round what to release (names forgotten, claims whose
publish never started after OWNER_CLAIM_TTL) and what another worker turned out to hold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgpack

from mediacore.app.cluster import Conflict, Registry
from mediacore.app.config import Config
from mediacore.app.local_owners import LocalOwners, WorkerInfo
from mediacore.model.counting import worth_logging
from mediacore.origin.peers import WorkerRoutes

log = logging.getLogger("mediacore.workers")

KINDS = ("rtmp", "rtsp", "rtmps", "rtsps")
"""The ingest listeners whose connections the parent hands over (the message body)."""
READY = b"ready"
"""What a worker sends its parent once every listener of its own is up."""
PREFER = b"prefer "
"""A worker's hint to its parent: `prefer INDEX ADDRESS`, the next connection from ADDRESS
goes to worker INDEX (which holds the stream ADDRESS just tried to publish here)."""
VIEWER = b"viewer "
"""A viewer event for the home worker's machine-wide plugin hooks: `viewer ` + a msgpack
[event, stream, viewer key], from a worker to the parent, which passes it to worker 0."""
MAX_MESSAGE = 512
"""Bytes of one channel message: a kind, READY, a PREFER hint (an IPv6 address is 45) or a
VIEWER event (a stream name and a viewer key); a longer event is not relayed."""
OWNER_ROUND = 1.0
"""Seconds between two rounds over this worker's names in the run directory."""
OWNER_CLAIM_TTL = 10.0
"""Seconds a claimed name stays held though its stream has not started (the publish is still
being set up); past it, a publish that never came gives the name back."""
HOME_WORKER = 0
"""The worker that serves the plugins' routes naming no stream, and [admin] port."""
LOOPBACK = "127.0.0.1"
JWT_SECRET_BYTES = 32
"""Random bytes of the secret the parent makes for its workers' tokens (hex-encoded)."""
JWT_SECRET_ENV = "MEDIACORE_WORKERS_JWT_SECRET"
"""Where the parent puts the tokens' signing secret for its workers when `[auth] jwt_secret`
is empty: each process would otherwise make its own, and a guest token that worker 0 issued
would be refused by the worker that owns the stream the viewer chats or buys in. An
environment variable, not an argument: other users can read a process's arguments."""


def take_jwt_secret(config: Config) -> None:
    """In a worker: the parent's signing secret, unless the configuration has one; removed from
    the environment so no subprocess (an encoder, a transcoder) inherits it."""
    secret = os.environ.pop(JWT_SECRET_ENV, "")
    if secret and not config.auth.jwt_secret:
        config.auth.jwt_secret = secret


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """Which worker this process is: its index, the run directory and the channel's fd."""

    index: int
    run_dir: Path
    channel: int

    @classmethod
    def parse(cls, text: str) -> WorkerRole:
        """From the hidden `--worker INDEX:FD:RUN_DIR` the parent passes."""
        index, fd, run_dir = text.split(":", 2)
        return cls(int(index), Path(run_dir), int(fd))

    def argument(self) -> str:
        return f"{self.index}:{self.channel}:{self.run_dir}"


def worker_count(text: str) -> int:
    """`--workers N` or `auto`: one per core this process may run on (its CPU affinity, which
    a container or `taskset` narrows, not the machine's count)."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) or 1
    count = int(text)
    if count < 1:
        raise ValueError("--workers must be at least 1 (or auto)")
    return count


def base_url(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


class WorkerLink:
    def __init__(
        self,
        role: WorkerRole,
        adopt: Callable[[str, socket.socket], Awaitable[None]],
        serving: Callable[[], Iterable[str]],
        on_conflict: Callable[[Conflict], None],
        on_parent_gone: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`adopt(kind, sock)` serves a handed connection; `serving` lists the streams this
        worker has (the hub's names)."""
        self.role = role
        self.owners = LocalOwners(role.run_dir, role.index)
        self.registry = Registry(str(role.index), OWNER_CLAIM_TTL)
        self.adopt = adopt
        self.serving = serving
        self.on_conflict = on_conflict
        self.on_parent_gone = on_parent_gone
        self.clock = clock
        self.channel = socket.socket(fileno=role.channel)
        self.channel.setblocking(False)
        self._task: asyncio.Task[None] | None = None
        self._adopting: set[asyncio.Task[None]] = set()
        self.on_viewer: Callable[[str, str, str], None] = lambda event, stream, viewer: None
        """Where a relayed viewer event goes (the plugins' machine-wide hooks; home worker)."""
        self.relay_dropped = 0
        self.http = WorkerRoutes(self._owner_http, self._home_http, self._peers_http)
        self.admin = WorkerRoutes(self._owner_admin, lambda: None, self._peers_admin)

    # The run directory -----------------------------------------------------------------

    def claim(self, name: str) -> int | None:
        """Hold `name` for a publish here: None when this worker holds it now, else the
        index of the worker that does."""
        owner = self.owners.claim(name)
        return None if self.registry.claimed(name, str(owner), self.clock()) else owner

    def refused(self, address: str, holder: int) -> None:
        """A publish from `address` was refused here because worker `holder` holds its name:
        ask the parent to send that address's next connection there."""
        try:
            self.channel.send(PREFER + f"{holder} {address}".encode())
        except OSError as e:
            log.warning("worker %d: could not tell the parent where %s belongs: %r", self.role.index, address, e)

    def elsewhere(self) -> dict[str, int]:
        """The names the other workers of the machine hold, with their index."""
        return {name: owner for name, owner in self.owners.holders().items() if owner != self.role.index}

    def relay_viewer(self, event: str, stream: str, viewer: str) -> None:
        """Send a viewer event to the home worker, through the parent (never waits: a full
        channel drops it, counted and logged now and then)."""
        message = VIEWER + msgpack.packb([event, stream, viewer])
        try:
            if len(message) > MAX_MESSAGE:
                raise ValueError(f"{len(message)} bytes")
            self.channel.send(message)
        except (OSError, ValueError) as e:
            self.relay_dropped += 1
            if worth_logging(self.relay_dropped - 1, self.relay_dropped):
                log.warning(
                    "worker %d: viewer event not relayed (%d so far): %r", self.role.index, self.relay_dropped, e
                )

    def round(self) -> None:
        """Release the names this worker forgot; hold again any it serves whose file went."""
        todo = self.registry.round(self.serving(), self.clock())
        for name in todo.release:
            self.owners.release(name)
        owners = [str(self.owners.claim(name)) for name in todo.renew]
        for conflict in self.registry.applied(todo, owners):
            log.error(
                "stream %s is held by worker %s, not worker %d; giving it up",
                conflict.name,
                conflict.owner,
                self.role.index,
            )
            self.on_conflict(conflict)

    def _address(self, index: int | None, admin: bool) -> str | None:
        if index is None or index == self.role.index:
            return None
        info = self.owners.info(index)
        if info is None:
            return None
        return base_url(info.admin_port if admin else info.http_port)

    def _owner_http(self, name: str) -> str | None:
        return self._address(self.owners.owner(name), admin=False)

    def _owner_admin(self, name: str) -> str | None:
        return self._address(self.owners.owner(name), admin=True)

    def _home_http(self) -> str | None:
        return self._address(HOME_WORKER, admin=False)

    def _peers_http(self) -> list[str]:
        return [base_url(info.http_port) for info in self.owners.peers()]

    def _peers_admin(self) -> list[str]:
        return [base_url(info.admin_port) for info in self.owners.peers()]

    # The channel to the parent -----------------------------------------------------------

    def start(self, http_port: int, admin_port: int) -> None:
        """Publish how to reach this worker, tell the parent it serves, take connections."""
        self.owners.publish_info(WorkerInfo(os.getpid(), http_port, admin_port))
        loop = asyncio.get_running_loop()
        loop.add_reader(self.channel.fileno(), self._readable)
        self.channel.send(READY)
        self._task = loop.create_task(self._rounds(), name="worker-owners")

    def _readable(self) -> None:
        while True:
            try:
                body, fds, _, _ = socket.recv_fds(self.channel, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except OSError as e:
                log.error("worker %d: the channel to the parent failed: %r", self.role.index, e)
                body, fds = b"", []
            if not body and not fds:
                asyncio.get_running_loop().remove_reader(self.channel.fileno())
                log.warning("worker %d: the parent is gone; draining", self.role.index)
                self.on_parent_gone()
                return
            if not fds and body.startswith(VIEWER):
                self._viewer_event(body[len(VIEWER) :])
                continue
            for fd in fds:
                sock = socket.socket(fileno=fd)
                kind = body.decode("ascii", "replace")
                if kind not in KINDS:
                    log.error("worker %d: a connection for unknown listener %r; closed", self.role.index, kind)
                    sock.close()
                    continue
                task = asyncio.get_running_loop().create_task(self._adopt(kind, sock))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    def _viewer_event(self, packed: bytes) -> None:
        try:
            event, stream, viewer = msgpack.unpackb(packed)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            log.error("worker %d: a malformed viewer event from the parent: %r", self.role.index, e)
            return
        if all(isinstance(v, str) for v in (event, stream, viewer)):
            self.on_viewer(event, stream, viewer)

    async def _adopt(self, kind: str, sock: socket.socket) -> None:
        try:
            await self.adopt(kind, sock)
        except (OSError, TimeoutError, ConnectionError) as e:  # a TLS handshake that failed, a peer gone
            log.info("worker %d: %s connection not served: %r", self.role.index, kind, e)
            sock.close()

    async def _rounds(self) -> None:
        while True:
            await asyncio.sleep(OWNER_ROUND)
            try:
                self.round()
            except OSError as e:  # the run directory is gone (the parent is exiting)
                log.warning("worker %d: owner round failed: %r", self.role.index, e)

    async def stop(self) -> None:
        """Stop taking connections and give every name back."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            asyncio.get_running_loop().remove_reader(self.channel.fileno())
        except (ValueError, OSError):
            pass
        for name in sorted(self.registry.registered):
            try:
                self.owners.release(name)
            except OSError:
                pass
        self.registry.registered.clear()
        await self.http.close()
        await self.admin.close()
        self.channel.close()

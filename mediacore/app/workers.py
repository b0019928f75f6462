"""The parent of `mediacore serve --workers N`: N worker processes, each a full engine
(docs/architecture.md, "Workers"). The parent serves no media and no HTTP; it

- listens on the ingest ports (RTMP, RTSP and their TLS ports) and hands each accepted
  connection to the worker the `Balancer` picks, over that worker's SOCK_SEQPACKET pair;
- starts the workers, restarts one that exits unexpectedly (after releasing its stream
  names), within WORKER_RESTARTS per WORKER_RESTART_WINDOW;
- prints the ready line once every worker serves, and on SIGTERM/SIGINT closes the ingest
  listeners and passes the signal on, so every worker drains as one process does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mediacore.app.balance import Balancer
from mediacore.app.config import Config, public_base_url
from mediacore.app.local_owners import LocalOwners, default_run_dir
from mediacore.app.supervision import WORKER_RESTART_WINDOW, WORKER_RESTARTS, RestartBudget
from mediacore.app.worker import (
    HOME_WORKER,
    JWT_SECRET_BYTES,
    JWT_SECRET_ENV,
    KINDS,
    MAX_MESSAGE,
    PREFER,
    READY,
    VIEWER,
    WorkerRole,
)
from mediacore.model.names import PUBLISH_APP
from mediacore.playlist.uris import playback_urls

log = logging.getLogger("mediacore.workers")

ACCEPT_BACKLOG = 128
"""Pending ingest connections the kernel queues for the parent to accept."""
BALANCE = "worker"
"""The RestartBudget's output label for a worker."""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    channel: socket.socket | None = None
    ready: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)


class Parent:
    def __init__(self, config: Config, argv: Sequence[str], count: int) -> None:
        """`argv`: the `serve` arguments each worker gets (the ports are added here)."""
        self.config = config
        self.argv = list(argv)
        self.workers = [Worker(i) for i in range(count)]
        self.run_dir = default_run_dir(os.getpid())
        self.jwt_secret = secrets.token_hex(JWT_SECRET_BYTES)
        """The workers' common token-signing secret when the configuration names none."""
        self.owners = LocalOwners(self.run_dir)
        self.balancer = Balancer()
        self.restarts = RestartBudget(WORKER_RESTARTS, WORKER_RESTART_WINDOW)
        self.listeners: dict[str, socket.socket] = {}
        self.ports: dict[str, int] = {}
        self.stopping = False
        self.failed = False
        self._watchers: set[asyncio.Task[None]] = set()

    # Ingest ------------------------------------------------------------------------------

    def listen(self) -> None:
        srv = self.config.server
        wanted = {
            "rtmp": srv.rtmp_port,
            "rtsp": srv.rtsp_port,
            "rtmps": self.config.rtmp.tls_port,
            "rtsps": self.config.rtsp.tls_port,
        }
        for kind in KINDS:
            if kind in ("rtmps", "rtsps") and not wanted[kind]:
                continue
            sock = socket.create_server((srv.host, wanted[kind]), backlog=ACCEPT_BACKLOG)
            sock.setblocking(False)
            self.listeners[kind] = sock
            self.ports[kind] = int(sock.getsockname()[1])
        self.ports["http"] = srv.http_port or free_port(srv.host)

    def accept(self) -> None:
        """Start handing connections over (until now the kernel queued them: a publisher that
        connects while the workers start waits instead of being turned away)."""
        loop = asyncio.get_running_loop()
        for kind, sock in self.listeners.items():
            loop.add_reader(sock.fileno(), self._accept, kind, sock)

    def _accept(self, kind: str, listener: socket.socket) -> None:
        while True:
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors: the next readiness tries again
                log.error("%s: accept failed: %r", kind, e)
                return
            with conn:
                self._hand_over(kind, conn, address)

    def _hand_over(self, kind: str, conn: socket.socket, address: object) -> None:
        live = {w.index for w in self.workers if w.ready and w.channel is not None}
        try:
            owned = self.owners.owned_counts()
        except OSError:
            owned = None
        host = str(address[0]) if isinstance(address, tuple) and address else ""
        index = self.balancer.pick(live, owned or {}, time.monotonic(), host)
        if index is None:
            log.warning("%s %s: no worker is ready; connection closed", kind, address)
            return
        channel = self.workers[index].channel
        assert channel is not None
        try:
            socket.send_fds(channel, [kind.encode()], [conn.fileno()])
        except OSError as e:
            log.error("%s %s: could not hand the connection to worker %d: %r", kind, address, index, e)

    def close_listeners(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self.listeners.values():
            loop.remove_reader(sock.fileno())  # False if it was not accepting yet
            sock.close()
        self.listeners = {}

    # Workers -----------------------------------------------------------------------------

    async def spawn(self, worker: Worker) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        role = WorkerRole(worker.index, self.run_dir, child_end.fileno())
        ports = [
            "--http-port",
            str(self.ports["http"]),
            "--rtmp-port",
            str(self.ports["rtmp"]),
            "--rtsp-port",
            str(self.ports["rtsp"]),
        ]
        command = [sys.executable, "-m", "mediacore.app.cli", "serve", *self.argv, *ports, "--worker", role.argument()]
        worker.process = await asyncio.create_subprocess_exec(
            *command,
            pass_fds=[child_end.fileno()],
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, JWT_SECRET_ENV: self.jwt_secret},
        )
        child_end.close()
        parent_end.setblocking(False)
        worker.channel = parent_end
        worker.ready = False
        asyncio.get_running_loop().add_reader(parent_end.fileno(), self._message, worker)
        watcher = asyncio.get_running_loop().create_task(self._watch(worker), name=f"worker-{worker.index}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def _message(self, worker: Worker) -> None:
        channel = worker.channel
        assert channel is not None
        try:
            body = channel.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            body = b""
        if body == READY:
            worker.ready = True
            worker.started.set()
            log.info("worker %d (pid %d) serving", worker.index, worker.process.pid if worker.process else 0)
        elif body.startswith(VIEWER):
            home = self.workers[HOME_WORKER]
            if home.ready and home.channel is not None:
                try:
                    home.channel.send(body)
                except OSError as e:  # a full or closed channel: the event is lost, the stream plays on
                    log.debug("viewer event for worker %d not passed on: %r", HOME_WORKER, e)
        elif body.startswith(PREFER):
            holder, _, address = body[len(PREFER) :].decode("ascii", "replace").partition(" ")
            if holder.isdigit() and int(holder) < len(self.workers):
                self.balancer.prefer(address, int(holder), time.monotonic())
        elif not body:  # the worker closed its end: it is exiting
            asyncio.get_running_loop().remove_reader(channel.fileno())
            worker.ready = False

    async def _watch(self, worker: Worker) -> None:
        process = worker.process
        assert process is not None
        code = await process.wait()
        worker.ready = False
        if worker.channel is not None:
            try:
                asyncio.get_running_loop().remove_reader(worker.channel.fileno())
            except (ValueError, OSError):
                pass
            worker.channel.close()
            worker.channel = None
        released = self.owners.release_worker(worker.index)
        self.balancer.forget(worker.index)
        if self.stopping:
            return
        log.error(
            "worker %d (pid %d) exited with %s; released its streams %s",
            worker.index,
            process.pid,
            code,
            ", ".join(released) or "(none)",
        )
        if not self.restarts.allow(str(worker.index), BALANCE, time.monotonic()):
            log.error(
                "worker %d exited %d times within %g s; not restarted",
                worker.index,
                WORKER_RESTARTS,
                WORKER_RESTART_WINDOW,
            )
            self.failed = True
            if not any(w.process is not None and w.process.returncode is None for w in self.workers):
                os.kill(os.getpid(), signal.SIGTERM)
            return
        await self.spawn(worker)

    def signal_workers(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)

    async def _all_started(self) -> None:
        for worker in self.workers:
            await worker.started.wait()

    @staticmethod
    async def _until(event: asyncio.Event) -> None:
        await event.wait()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 when every worker exited cleanly."""
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.owners.create()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        codes: list[int] = []

        def on_signal() -> None:
            if self.stopping:
                self.signal_workers()  # a second signal: the workers stop without finishing the drain
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            self.listen()
            for worker in self.workers:
                await self.spawn(worker)
            started = asyncio.ensure_future(self._all_started())
            waiting = asyncio.ensure_future(self._until(stop))
            await asyncio.wait({started, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if started.done():
                self.accept()
                base = public_base_url(self.config.server, self.ports["http"])
                print(
                    f"mediacore serving: rtmp://HOST:{self.ports['rtmp']}/{PUBLISH_APP}/STREAM -> "
                    f"{playback_urls(base, 'STREAM')['watch']} ({len(self.workers)} workers, {self.run_dir})",
                    flush=True,
                )
            else:
                started.cancel()
            await waiting
            self.stopping = True
            log.info("shutting down: closing ingest, draining %d workers", len(self.workers))
            self.close_listeners()
            self.signal_workers()
            codes = [await w.process.wait() for w in self.workers if w.process is not None]
            for task in list(self._watchers):
                await asyncio.gather(task, return_exceptions=True)
        finally:
            self.stopping = True
            self.close_listeners()
            for worker in self.workers:
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()
                    await worker.process.wait()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return 1 if self.failed or any(codes) else 0

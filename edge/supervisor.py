"""The process side of `mediacore edge --workers N`: N forked workers sharing the public port
(SO_REUSEPORT), each also serving its siblings on a loopback peer listener; a worker that
dies is forked again, as often as the caller's restart policy allows (`mediacore edge` passes
the rule `serve --workers` uses, mediacore/app/supervision.py).

Why fork here and spawn in `serve --workers` (mediacore/app/workers.py): an edge worker
inherits its listening sockets and needs nothing else from the parent, and the supervisor
runs no loop and no threads, so fork is safe and cheap; the `serve` parent runs an event loop
(it accepts ingest connections and hands them over), which must not cross a fork.

The supervisor runs no event loop (a loop must not cross fork) and holds the sockets that
must outlive a worker: the public port's reservation (bound, never listening, so it takes
no connections) and the peer listeners (a sibling's request to a restarting worker waits in
the backlog). See docs/architecture.md, "Edge workers".
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger("mediacore.edge")

RESTART_DELAY = 0.5
"""Seconds before a dead worker is forked again: a worker that fails at start cannot spin a core."""
PEER_BACKLOG = 1024
"""Pending connections a peer listener holds: siblings' requests queued while its worker restarts."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket holding the public port for the workers'
    listeners (port 0 resolves here once); only listening sockets are handed connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def peer_listeners(count: int) -> list[socket.socket]:
    """One loopback listener per worker, opened before the workers exist so every worker knows
    every sibling's address and a restarted worker takes over the same one."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(PEER_BACKLOG)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def supervise(
    workers: int,
    run_worker: Callable[[int], int],
    may_restart: Callable[[int], bool] = lambda index: True,
    given_up: Callable[[int], None] = lambda index: None,
) -> int:
    """Fork `run_worker(i)` for i in 0..workers-1 and keep each running until SIGINT / SIGTERM,
    which is passed on to the workers; a worker that exits meanwhile is forked again if
    `may_restart(i)` says so, else `given_up(i)` is called (the caller closes what only that
    worker served). Returns once all of them have exited: 0, or 1 when a worker was given up."""
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False
    gave_up = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            os.kill(pid, signal.SIGTERM)

    def fork(index: int) -> None:
        # Stop signals are held across fork: one arriving in between reaches the new child too.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in STOP_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                code = run_worker(index)
            except BaseException:
                log.exception("edge worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    for index in range(workers):
        fork(index)
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid not in children or stopping:
            children.pop(pid, 0)
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)  # negative: killed by that signal
        if not may_restart(index):
            log.error("edge worker %d (pid %d) exited (%d) too often; not restarted", index, pid, code)
            gave_up = True
            given_up(index)
            continue
        log.warning("edge worker %d (pid %d) exited (%d): restarting it", index, pid, code)
        time.sleep(RESTART_DELAY)
        if not stopping:
            fork(index)
    return 1 if gave_up else 0

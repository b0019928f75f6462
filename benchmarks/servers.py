"""Real server processes for benchmarks and tests: `mediacore serve` from this tree with a
TOML configuration, waited for until it is ready and stopped with SIGTERM, and a
redis-server on a free loopback port without persistence (`--save "" --appendonly no`).

Tests import this module; it imports nothing from tests.

    with running_redis(directory) as url: ...
    with serving(config, directory / "server.log", f"{base}/api/products"): ...   # threads
    proc = await start_serve(config, directory / "server.log")                   # asyncio
    await stop_process(proc)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks.ingest import free_port

ROOT = Path(__file__).resolve().parent.parent
SERVE_TIMEOUT = 30.0
"""Seconds `mediacore serve` may take to be ready."""
REDIS_TIMEOUT = 10.0
"""Seconds redis-server may take to answer PING after it was started."""
READY_LINE = b"mediacore serving"
"""What `mediacore serve` prints on stdout once every listener is up."""


def serve_command(config: Path, log_level: str | None = None, workers: int = 1) -> list[str]:
    """`mediacore serve` with `config`, at `log_level` (else the configuration's), as
    `workers` processes (one unless asked: `serve` itself defaults to one per core)."""
    command = [sys.executable, "-m", "mediacore.app.cli", "serve", "--config", str(config), "--workers", str(workers)]
    return command + (["--log-level", log_level] if log_level else [])


def serve_env() -> dict[str, str]:
    """The environment of a server started from this tree: this tree first on the path, and
    without asyncio debug mode (which conftest turns on for the test process): a server does
    not run with it, and it would slow every request."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def answers(url: str) -> bool:
    """Whether GET `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_started(
    ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Polls `ready` until it holds; raises with the tail of `log` if `proc` exits first or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


def stop_popen(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited after `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def stop_process(proc: asyncio.subprocess.Process, timeout: float | None = 5.0) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited after `timeout` seconds (None: wait)."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.contextmanager
def serving(config: Path, log: Path, ready_url: str, log_level: str | None = "warning") -> Iterator[None]:
    """Runs `mediacore serve` with `config` (stdout and stderr to `log`) until `ready_url`
    answers 200; stops it on leaving."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            serve_command(config, log_level),
            cwd=ROOT,
            env=serve_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_started(lambda: answers(ready_url), "mediacore serve", proc, log, SERVE_TIMEOUT)
            yield
        finally:
            stop_popen(proc)


async def start_serve(config: Path, log: Path, log_level: str | None = None) -> asyncio.subprocess.Process:
    """`mediacore serve` with `config` (stderr to `log`), returned once it printed its ready
    line; stopped again if it does not within SERVE_TIMEOUT."""
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *serve_command(config, log_level),
            cwd=str(ROOT),
            env=serve_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), SERVE_TIMEOUT)
        if READY_LINE not in line:
            raise RuntimeError(f"mediacore serve did not start: {log.read_text(errors='replace')[-3000:]}")
    except BaseException:
        await stop_process(proc)
        raise
    return proc


def pings(port: int) -> bool:
    """Whether a Redis server on loopback `port` answers PING now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server on a fixed free port whose files (and redis.log) live in `directory`;
    it can be stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed; `make test` installs it (scripts/install-system-deps.sh)"
            )
        log = self.directory / "redis.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                + ["--dir", str(self.directory), "--protected-mode", "yes", "--maxclients", "10000"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_started(lambda: pings(self.port), "redis-server", self.proc, log, REDIS_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop_popen(self.proc)
            self.proc = None


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[str]:
    """Yields the redis:// URL of a fresh server whose files live in `directory`."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()

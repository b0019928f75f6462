"""`mediacore serve` as a real OS process for the commerce plugin's HTTP tests: a temporary
TOML configuration (free ports, its own data directory, the tests' JWT secret, optionally
Redis), started from this tree and stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from commerce_http import SECRET
from conftest import ROOT, free_port

START_TIMEOUT = 30.0


def write_config(directory: Path, commerce: dict[str, object] | None = None) -> tuple[Path, int]:
    """A configuration for one server in `directory`; returns its path and HTTP port."""
    port = free_port()
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        f"rtmp_port = {free_port()}",
        f"rtsp_port = {free_port()}",
        f"http_port = {port}",
        f'data_dir = "{directory / "data"}"',
        "[admin]",
        "port = 0",
        "[auth]",
        f'jwt_secret = "{SECRET}"',
        "[commerce]",
    ]
    for key, value in (commerce or {}).items():
        lines.append(f"{key} = {value!r}".replace("'", '"') if isinstance(value, str) else f"{key} = {value}")
    path = directory / "mediacore.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, port


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/products", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def serving(directory: Path, commerce: dict[str, object] | None = None) -> Iterator[str]:
    """Runs `mediacore serve` with the commerce plugin; yields its base URL."""
    directory.mkdir(parents=True, exist_ok=True)
    config, port = write_config(directory, commerce)
    # Without asyncio debug mode (which conftest turns on for the test process): a server
    # does not run with it, and it would slow every request.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mediacore.app.cli", "serve", "--config", str(config), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _ready(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mediacore serve did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

"""`mediacore serve` as a real OS process for the commerce plugin's HTTP tests: a temporary
TOML configuration (free ports, its own data directory, the tests' JWT secret, optionally
Redis), started from this tree and stopped with SIGTERM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from commerce_http import SECRET
from conftest import free_port

from benchmarks import servers


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


@contextlib.contextmanager
def serving(directory: Path, commerce: dict[str, object] | None = None) -> Iterator[str]:
    """Runs `mediacore serve` with the commerce plugin; yields its base URL."""
    directory.mkdir(parents=True, exist_ok=True)
    config, port = write_config(directory, commerce)
    base = f"http://127.0.0.1:{port}"
    with servers.serving(config, directory / "server.log", f"{base}/api/products"):
        yield base

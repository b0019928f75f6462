"""A live origin for benchmarks: `mediacore serve` in its own process, fed by a real-time
ffmpeg push of the generated clip, with helpers to read Prometheus figures."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.ingest import free_port, push, serve_cmd, wait_port
from benchmarks.media import make_clip


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """Sum of a Prometheus metric's samples (optionally those whose labels contain `labels`)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}(\{{.*\}})? (\S+)$", line)
        if m and labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def fetch_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


@contextmanager
def live_origin(
    stream: str = "bench", config: Path | None = None
) -> Iterator[tuple[int, int, subprocess.Popen[bytes]]]:
    """Yields (http_port, admin_port, server process) once HLS and LL-HLS of `stream` are
    being served; /metrics is on the admin port. `config`: a TOML file for the server."""
    clip = make_clip(10)
    rtmp_port, http_port, admin_port = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        serve_cmd(rtmp_port, http_port, admin_port) + (["--config", str(config)] if config else []),
        stdout=subprocess.DEVNULL,
    )
    pusher = None
    try:
        wait_port(rtmp_port)
        wait_port(http_port)
        wait_port(admin_port)
        pusher = push(clip, f"rtmp://127.0.0.1:{rtmp_port}/live/{stream}")
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch_text(f"http://127.0.0.1:{http_port}/live/{stream}/ll.m3u8", 2)
                fetch_text(f"http://127.0.0.1:{http_port}/live/{stream}/index.m3u8", 2)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError("the origin never served the stream") from e
                time.sleep(0.2)
        time.sleep(4)  # a few segments, as a viewer joining a running show would find
        yield http_port, admin_port, server
    finally:
        if pusher is not None:
            pusher.terminate()
            pusher.wait(5)
        server.terminate()
        server.wait(10)


def start_edge(
    upstream: str, cache_mb: int = 256, workers: int = 1, cpu_affinity: bool = False
) -> tuple[int, subprocess.Popen[bytes]]:
    """`mediacore edge` in front of `upstream` on a free loopback port; `cpu_affinity`: each
    worker pinned to a CPU of its own."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mediacore.app.cli",
            "edge",
            "--origin",
            upstream,
            "--host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--cache-mb",
            str(cache_mb),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            *(["--cpu-affinity"] if cpu_affinity else []),
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_port(port)
    return port, proc

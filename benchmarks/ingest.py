"""`mediacore-bench ingest`: server CPU and memory per real-time RTMP stream.

N ffmpeg processes push the generated 720p30 clip in real time (-re, looped, -c copy) to
the server, which packages each to HLS. After a warm-up we sample the server process's CPU
time (user + system) and RSS. The same pushes then go to nginx-rtmp (doing HLS too) when it
is installed, in the same run, so the ratio compares like with like on this machine.

Memory is sampled after the CPU window (so its requests do not count as the server's CPU),
MEMORY_SAMPLES times MEMORY_SAMPLE_INTERVAL apart, pushes still running: RSS and the media
the playlists hold both move in steps (a segment cut adds a segment and a joined LL-HLS
parent at once; the heap is trimmed every 5 s), so one reading lands anywhere on that
sawtooth; the mean of samples spread over every phase of it is the stream's steady cost,
and the largest sample is reported beside it.

With `--workers N` (N > 1) the same pushes go to `mediacore serve --workers N` too, and CPU
and RSS are summed over the parent and its workers. "Streams per machine at the same CPU
scale" is the cores a server can use (one for one process; min(N, cores) for N workers)
divided by its CPU seconds per stream-second: how many such streams the machine carries
before the server's cores are full. The ratio N workers / one worker is what the workers
buy: N when a worker costs exactly what one process costs per stream.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from tqdm import tqdm

from benchmarks.media import make_clip
from benchmarks.peers import start_nginx
from ingest.rtmp.config import RtmpConfig
from mediacore.app.affinity import cpu_for


@dataclass
class IngestResult:
    server: str
    streams: int
    seconds: float
    cpu_seconds: float
    cpu_per_stream_second: float
    streams_per_core: float
    rss_mb: float
    rss_per_stream_mb: float  # growth over the idle server, per stream (mean of the samples)
    streams_live: int
    held_per_stream_mb: float | None = None  # media the playlists hold (mediacore's own count), per stream
    workers: int = 1
    streams_per_machine: float = 0.0  # usable cores / CPU s per stream-second
    beyond_media_max_per_stream_mb: float | None = None  # the largest sample of growth - held, per stream


MEMORY_SAMPLES = 15
MEMORY_SAMPLE_INTERVAL = 0.7
"""Seconds between memory samples: not a divisor of the 2 s segment or the 5 s heap trim, so
the samples fall at every phase of both."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def push_cmd(clip: Path, url: str, tcp_nodelay: bool = False) -> list[str]:
    """ffmpeg pushing `clip` to `url` in real time, looped, streams copied into FLV.

    ffmpeg writes each RTMP message in two calls, the chunk header and then the body, on a
    socket with Nagle's algorithm on: the server reads the header alone, and its ACK releases
    the body, so it wakes twice per message. `tcp_nodelay` (`-tcp_nodelay 1`) sends both at
    once: one wake-up per message (docs/performance.md, fifth round)."""
    return [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        str(clip),
        "-c",
        "copy",
        *(["-tcp_nodelay", "1"] if tcp_nodelay else []),
        "-f",
        "flv",
        url,
    ]


def push(clip: Path, url: str, tcp_nodelay: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(push_cmd(clip, url, tcp_nodelay), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def rss_bytes(proc: psutil.Process) -> int:
    """Resident memory of `proc` and its children (the workers of `serve --workers N`)."""
    total = int(proc.memory_info().rss)
    for child in proc.children(recursive=True):
        try:
            total += int(child.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return total


def usable_cores(workers: int) -> int:
    """Cores a server of `workers` processes can keep busy on this machine."""
    return min(workers, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class Pushes:
    """What every server of a run is measured on: the same pushes, windows and samples."""

    clip: Path
    streams: int
    seconds: float
    warmup: float
    memory_samples: int = MEMORY_SAMPLES
    tcp_nodelay: bool = False
    """ffmpeg -tcp_nodelay 1 (push_cmd)."""


def measure(
    server: str,
    pid: int,
    rtmp_port: int,
    pushes: Pushes,
    live_count: Callable[[], int],
    held_mb: Callable[[], float | None] = lambda: None,
    workers: int = 1,
) -> IngestResult:
    clip, streams, seconds, warmup = pushes.clip, pushes.streams, pushes.seconds, pushes.warmup
    proc = psutil.Process(pid)
    idle_rss = rss_bytes(proc) / 1e6
    pushers = [push(clip, f"rtmp://127.0.0.1:{rtmp_port}/live/bench{i}", pushes.tcp_nodelay) for i in range(streams)]
    try:
        time.sleep(warmup)
        start_cpu = cpu_seconds(proc)
        start = time.monotonic()
        for _ in tqdm(range(int(seconds)), desc=f"{server:>9} x{streams}", unit="s", file=sys.stderr, leave=False):
            time.sleep(1.0)
        elapsed = time.monotonic() - start
        used = cpu_seconds(proc) - start_cpu
        live = live_count()
        samples = [(rss_bytes(proc) / 1e6, held_mb())]  # (RSS MB, media held MB or None)
        for _ in range(pushes.memory_samples - 1):
            time.sleep(MEMORY_SAMPLE_INTERVAL)
            samples.append((rss_bytes(proc) / 1e6, held_mb()))
    finally:
        for p in pushers:
            p.terminate()
        for p in pushers:
            p.wait(5)
    per_stream_second = used / (elapsed * streams)
    rss = sum(r for r, _ in samples) / len(samples)
    with_held = [(r, h) for r, h in samples if h is not None]
    held = sum(h for _, h in with_held) / len(with_held) if len(with_held) == len(samples) else None
    beyond_max = max(r - idle_rss - h for r, h in with_held) / streams if held is not None else None
    return IngestResult(
        server,
        streams,
        round(elapsed, 2),
        round(used, 3),
        round(per_stream_second, 5),
        round(1 / per_stream_second, 1) if per_stream_second > 0 else float("inf"),
        round(rss, 1),
        round((rss - idle_rss) / streams, 2),
        live,
        None if held is None else round(held / streams, 2),
        workers,
        round(usable_cores(workers) / per_stream_second, 1) if per_stream_second > 0 else float("inf"),
        None if beyond_max is None else round(beyond_max, 2),
    )


def serve_cmd(
    rtmp_port: int,
    http_port: int,
    admin_port: int = 0,
    config: Path | None = None,
    workers: int = 1,
    cpu_affinity: bool = False,
) -> list[str]:
    """`mediacore serve` on loopback with these ports (RTSP on any free one, the admin
    listener on `admin_port` or any free one), quiet; `config`: a configuration file;
    `workers`: worker processes; `cpu_affinity`: each pinned to a CPU of its own."""
    return [
        sys.executable,
        "-m",
        "mediacore.app.cli",
        "serve",
        *(["--config", str(config)] if config is not None else []),
        "--host",
        "127.0.0.1",
        "--rtmp-port",
        str(rtmp_port),
        "--http-port",
        str(http_port),
        "--rtsp-port",
        str(free_port()),
        "--admin-port",
        str(admin_port),
        "--log-level",
        "warning",
        *["--workers", str(workers)],
        *(["--cpu-affinity"] if cpu_affinity else []),
    ]


def admin_ports(server_pid: int, admin_port: int) -> list[int]:
    """The admin listeners of a `serve --workers N` (each worker's, from its run directory),
    or `admin_port` for one process."""
    from mediacore.app.local_owners import LocalOwners, default_run_dir

    owners = LocalOwners(default_run_dir(server_pid))
    if not owners.workers.is_dir():
        return [admin_port]
    return [info.admin_port for info in owners.peers()]


def run_mediacore(pushes: Pushes, workers: int = 1, cpu_affinity: bool = False) -> IngestResult:
    streams = pushes.streams
    rtmp_port, http_port, admin_port = free_port(), free_port(), free_port()
    # Every push comes from loopback: the per-address connection cap ([rtmp]
    # max_connections_per_ip, 20) must admit them all, or the figures count refused streams.
    config = Path(tempfile.mkdtemp(prefix="mediacore-bench-ingest-")) / "mediacore.toml"
    config.write_text(f"[rtmp]\nmax_connections_per_ip = {max(streams, RtmpConfig().max_connections_per_ip)}\n")
    server = subprocess.Popen(
        serve_cmd(rtmp_port, http_port, admin_port, config, workers, cpu_affinity),
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(rtmp_port)
        wait_port(http_port)

        def live_count() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/streams", timeout=5) as r:
                return sum(1 for s in json.load(r) if s["state"] == "live" and s["segments"] > 0)

        def held_mb() -> float:
            """MB of media the playlists hold, from the server's mediacore_media_held_bytes
            (every worker's)."""
            held = 0.0
            for port in admin_ports(server.pid, admin_port):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    lines = r.read().decode().splitlines()
                held += sum(
                    float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("mediacore_media_held_bytes{")
                )
            return held / 1e6

        label = "mediacore" if workers == 1 else f"mediacore×{workers}"
        return measure(label, server.pid, rtmp_port, pushes, live_count, held_mb, workers)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(config.parent, ignore_errors=True)


def run_nginx(pushes: Pushes, cpu_affinity: bool = False) -> IngestResult | None:
    """nginx-rtmp on the same pushes; `cpu_affinity`: pinned to the CPU a pinned mediacore
    takes (its one process, one thread)."""
    with tempfile.TemporaryDirectory(prefix="mediacore-bench-nginx-") as tmp:
        port = free_port()
        nginx = start_nginx(Path(tmp), port)
        if nginx is None:
            return None
        try:
            if cpu_affinity:
                os.sched_setaffinity(nginx.pid, {cpu_for(0, os.sched_getaffinity(0))})
            wait_port(port)

            def live_count() -> int:
                return sum(1 for i in range(pushes.streams) if (Path(tmp) / "hls" / f"bench{i}.m3u8").exists())

            return measure("nginx-rtmp", nginx.pid, port, pushes, live_count)
        finally:
            nginx.terminate()
            nginx.wait(10)


def run(
    streams: int,
    seconds: float,
    warmup: float,
    out: Path | None,
    peers: bool,
    workers: int = 1,
    cpu_affinity: bool = False,
    memory_samples: int = MEMORY_SAMPLES,
    tcp_nodelay: bool = False,
) -> dict:
    """`cpu_affinity`: every server pinned ([server] cpu_affinity; nginx-rtmp to the same CPU
    as one mediacore process); `memory_samples`: RSS samples after the CPU window;
    `tcp_nodelay`: the pushes send each message's header and body at once (push_cmd)."""
    clip = make_clip(10)
    pushes = Pushes(clip, streams, seconds, warmup, memory_samples, tcp_nodelay)
    results = [run_mediacore(pushes, 1, cpu_affinity)]
    if workers > 1:
        results.append(run_mediacore(pushes, workers, cpu_affinity))
    nginx = run_nginx(pushes, cpu_affinity) if peers else None
    if nginx is not None:
        results.append(nginx)
    header = (
        f"{'server':<13}{'streams':>8}{'live':>6}{'CPU s/stream-s':>16}{'streams/core':>14}{'per machine':>13}"
        f"{'RSS MB':>9}{'+RSS/stream':>12}{'held/stream':>12}{'beyond':>8}{'max':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.server:<13}{r.streams:>8}{r.streams_live:>6}{r.cpu_per_stream_second:>16.4f}"
            f"{r.streams_per_core:>14.1f}{r.streams_per_machine:>13.1f}{r.rss_mb:>9.1f}{r.rss_per_stream_mb:>12.2f}"
            f"{'-' if r.held_per_stream_mb is None else f'{r.held_per_stream_mb:.2f}':>12}"
            f"{'-' if r.held_per_stream_mb is None else f'{r.rss_per_stream_mb - r.held_per_stream_mb:.2f}':>8}"
            f"{'-' if r.beyond_media_max_per_stream_mb is None else f'{r.beyond_media_max_per_stream_mb:.2f}':>6}"
        )
    print(
        f"RSS: the mean of {memory_samples} samples {MEMORY_SAMPLE_INTERVAL} s apart after the CPU window;"
        " beyond = +RSS/stream - held/stream, max = its largest sample"
    )
    report: dict = {
        "suite": "ingest",
        "clip": str(clip),
        "cpu_affinity": cpu_affinity,
        "memory_samples": memory_samples,
        "tcp_nodelay": tcp_nodelay,
        "memory_sample_interval": MEMORY_SAMPLE_INTERVAL,
        "results": [asdict(r) for r in results],
    }
    if cpu_affinity:
        print("every server pinned to CPUs of its own (--cpu-affinity)")
    if tcp_nodelay:
        print("pushed with ffmpeg -tcp_nodelay 1 (each message's header and body written at once)")
    if workers > 1 and results[1].streams_per_machine > 0:
        scale = results[1].streams_per_machine / results[0].streams_per_machine
        report["streams_per_machine_workers_vs_one"] = round(scale, 3)
        print(
            f"\nstreams per machine at the same CPU scale: {workers} workers / one process = {scale:.2f} "
            f"({usable_cores(workers)} of {os.cpu_count()} cores usable vs 1)"
        )
    if nginx is not None and results[0].cpu_per_stream_second > 0:
        ratio = nginx.cpu_per_stream_second / results[0].cpu_per_stream_second
        report["streams_per_core_vs_nginx"] = round(ratio, 3)
        print(f"\nmediacore streams per core / nginx-rtmp streams per core = {ratio:.2f}")
    else:
        print("\nnginx with the RTMP module is not installed: no peer comparison")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"results written to {out}")
    return report

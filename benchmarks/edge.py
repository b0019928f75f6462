"""`mediacore-bench edge`: the edge against nginx serving the same cached objects.

One origin with a live stream; in front of it `mediacore edge --workers W` and nginx
(proxy_cache, `worker_processes W`), both warmed with the same segment and playlist. wrk
(the same threads and connections for both, from loopback) measures requests/s and bytes/s
for a cached segment and for the live playlist on each; the load average is recorded beside
each run, as the machine may be shared. Then V LL-HLS viewers (`player_client.lean`: one
keep-alive connection each, raw asyncio, little CPU per viewer), spread over several client
processes, play through the edge for VIEWER_SECONDS while the project's client
(`player_client.llhls.follow`) measures part delay through the edge and directly from the
origin, and the origin counts how many part requests reached it per part produced.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.ingest import free_port, wait_port
from benchmarks.live import fetch_text, live_origin, metric_sum, start_edge
from benchmarks.peers import start_nginx_proxy
from edge.workers import WORKER_HEADER
from player_client.lean import run_lean_viewers
from player_client.llhls import follow
from player_client.player import ViewerStats, percentile, summarize

VIEWER_SECONDS = 20.0
"""How long the LL-HLS viewers play, unless `run` is told otherwise (`--viewer-seconds`)."""
MAX_VIEWERS = 5000
"""The most simulated viewers one run starts (each holds a connection or two on loopback)."""
VIEWERS_PER_PROCESS = 500
"""Viewers one client process simulates (the load comes from several processes, as from
several machines); with the lean viewer one loop drives this many at a fraction of a core."""
START_TIMEOUT = 60.0
"""Seconds the client processes may take to start (imports) before the viewers begin."""
PART_SECONDS = 0.2
"""The origin's part duration at the defaults: parts produced per second of playing."""
OPEN_FILES = 16384
"""Descriptors the benchmark (and the processes it starts) may hold: viewers' connections."""
UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}


def wrk(url: str, seconds: float, connections: int, threads: int = 1) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(rps.group(1)) if rps else 0.0,
        "mb_per_s": float(transfer.group(1)) * UNITS.get(transfer.group(2), 1) / 1e6 if transfer else 0.0,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "load_1m": round(os.getloadavg()[0], 2),
    }


def _viewer_process(url: str, viewers: int, seconds: float, result: Any, go: Any, niceness: int) -> None:
    """One client process: `viewers` lean LL-HLS viewers on one uvloop, started when `go` is set,
    at `niceness` (os.nice) when it is not 0."""
    import uvloop

    if niceness:
        os.nice(niceness)
    result.put(None)  # started (imports done)
    go.wait()
    result.put(uvloop.run(run_lean_viewers(url, viewers, seconds)))


def run_viewer_processes(
    url: str, viewers: int, seconds: float, playing: threading.Event | None = None, niceness: int = 0
) -> tuple[list[ViewerStats], int]:
    """`viewers` viewers spread over client processes of VIEWERS_PER_PROCESS at most; returns
    their stats and the number of processes. Blocks for about `seconds` once they all started
    (`playing` is set then). `niceness`: the client processes' (os.nice), so that on a machine
    shared with the servers they take the CPU the servers leave, as load from other machines
    would."""
    processes = max(1, -(-viewers // VIEWERS_PER_PROCESS))
    ctx = multiprocessing.get_context("spawn")
    result, go = ctx.Queue(), ctx.Event()
    shares = [viewers // processes + (1 if i < viewers % processes else 0) for i in range(processes)]
    clients = [ctx.Process(target=_viewer_process, args=(url, n, seconds, result, go, niceness)) for n in shares]
    for client in clients:
        client.start()
    try:
        for _ in clients:
            result.get(timeout=START_TIMEOUT)
        go.set()
        if playing is not None:
            playing.set()
        stats: list[ViewerStats] = []
        for _ in clients:
            stats += result.get(timeout=seconds + START_TIMEOUT)
        return stats, processes
    finally:
        for client in clients:
            client.join(10)
            if client.is_alive():
                client.kill()


def wait_for_workers(base: str, workers: int, timeout: float = 20.0) -> None:
    """Until every worker of the edge answers (each reports itself in WORKER_HEADER)."""
    if workers < 2:
        return
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only edge workers {sorted(seen)} answered")
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=2) as r:
                seen.add(r.headers.get(WORKER_HEADER, ""))
        except OSError:
            time.sleep(0.1)


def run(
    seconds: float,
    connections: int,
    viewers: int,
    out: Path | None,
    workers: int = 1,
    threads: int = 0,
    cpu_affinity: bool = False,
    viewer_niceness: int = 0,
    viewer_seconds: float | None = None,
) -> dict:
    """`cpu_affinity`: the edge's workers pinned to CPUs of their own, nginx's too
    (`worker_cpu_affinity auto`); `viewer_niceness`: the LL-HLS viewers' client processes run
    at that niceness (run_viewer_processes) and play `viewer_seconds` (VIEWER_SECONDS if None)."""
    viewer_seconds = viewer_seconds or VIEWER_SECONDS
    if shutil.which("wrk") is None:
        raise SystemExit("mediacore-bench edge needs wrk (apt-get install wrk)")
    viewers = min(viewers, MAX_VIEWERS)
    threads = threads or workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, OPEN_FILES)), hard))
    report: dict = {
        "suite": "edge",
        "workers": workers,
        "cpu_affinity": cpu_affinity,
        "wrk_threads": threads,
        "connections": connections,
        "seconds": seconds,
        "cores": os.cpu_count(),
        "load_1m_before": round(os.getloadavg()[0], 2),
    }
    with (
        live_origin() as (http_port, admin_port, _),
        tempfile.TemporaryDirectory(prefix="mediacore-bench-edge-") as tmp,
    ):
        origin = f"http://127.0.0.1:{http_port}"
        origin_metrics = f"http://127.0.0.1:{admin_port}/metrics"
        edge_port, edge = start_edge(origin, workers=workers, cpu_affinity=cpu_affinity)
        nginx_port = free_port()
        nginx = start_nginx_proxy(Path(tmp), nginx_port, f"127.0.0.1:{http_port}", workers, cpu_affinity)
        try:
            targets = {"mediacore-edge": f"http://127.0.0.1:{edge_port}"}
            wait_for_workers(targets["mediacore-edge"], workers)
            if nginx is not None:
                wait_port(nginx_port)
                targets["nginx"] = f"http://127.0.0.1:{nginx_port}"
            playlist = fetch_text(f"{origin}/live/bench/index.m3u8")
            segment = [ln for ln in playlist.splitlines() if ln.endswith(".ts")][-2]
            objects = {"segment": f"/live/bench/{segment}", "playlist": "/live/bench/index.m3u8"}
            for base in targets.values():  # warm both caches with the same objects
                for path in objects.values():
                    with urllib.request.urlopen(base + path, timeout=10) as r:
                        r.read()
            for kind, path in objects.items():
                for name, base in targets.items():
                    print(f"wrk {kind} on {name} ...", file=sys.stderr)
                    report.setdefault(kind, {})[name] = wrk(base + path, seconds, connections, threads)
            if "nginx" in targets:
                for kind in objects:
                    ours, theirs = report[kind]["mediacore-edge"], report[kind]["nginx"]
                    report[kind]["ratio_vs_nginx"] = (
                        round(ours["requests_per_s"] / theirs["requests_per_s"], 3)
                        if theirs["requests_per_s"]
                        else None
                    )

            # LL-HLS viewers through the edge from client processes; one probe client through
            # the edge and one straight from the origin in this process.
            before = fetch_text(origin_metrics)
            edge_base = targets["mediacore-edge"]

            async def probes() -> tuple[object, object]:
                return await asyncio.gather(
                    follow(f"{edge_base}/live/bench/ll.m3u8", viewer_seconds),
                    follow(f"{origin}/live/bench/ll.m3u8", viewer_seconds),
                )

            print(f"{viewers} LL-HLS viewers through the edge for {viewer_seconds:.0f} s ...", file=sys.stderr)
            pool: list[tuple[list[ViewerStats], int]] = []
            playing = threading.Event()
            runner = threading.Thread(
                target=lambda: pool.append(
                    run_viewer_processes(
                        f"{edge_base}/live/bench/ll.m3u8", viewers, viewer_seconds, playing, viewer_niceness
                    )
                )
            )
            runner.start()
            if not playing.wait(START_TIMEOUT):
                raise RuntimeError("the viewer processes did not start")
            started = time.monotonic()
            via_edge, direct = asyncio.run(probes())
            runner.join()
            stats, processes = pool[0]
            elapsed = time.monotonic() - started
            report["load_1m_viewers"] = round(os.getloadavg()[0], 2)
            after = fetch_text(origin_metrics)
            part_requests = metric_sum(after, "mediacore_http_requests_total", "/ll/{name}.{ext}") - metric_sum(
                before, "mediacore_http_requests_total", "/ll/{name}.{ext}"
            )
            # Video parts produced meanwhile (viewers follow the video rendition), one per
            # PART_SECONDS; the direct probe fetched each part of its viewer_seconds once as well.
            produced = elapsed / PART_SECONDS
            direct_parts = viewer_seconds / PART_SECONDS
            report["ll_viewers"] = {
                "viewers": summarize(stats),
                "client_processes": processes,
                "client_niceness": viewer_niceness,
                "requests_per_s": round(sum(s.requests for s in stats) / elapsed),
                "part_delay_p99_edge_s": percentile(via_edge.part_delays, 0.99),  # type: ignore[attr-defined]
                "part_delay_p99_origin_s": percentile(direct.part_delays, 0.99),  # type: ignore[attr-defined]
                "origin_media_requests_per_part": round((part_requests - direct_parts) / produced, 2),
            }
        finally:
            edge.terminate()
            edge.wait(10)
            if nginx is not None:
                nginx.terminate()
                nginx.wait(10)
    for kind in ("segment", "playlist"):
        for name, figures in report[kind].items():
            if isinstance(figures, dict):
                print(
                    f"{kind:<9} {name:<15} {figures['requests_per_s']:>10.0f} req/s {figures['mb_per_s']:>9.1f} MB/s"
                    f"  non-2xx {figures['non_2xx']:.0f}  load {figures['load_1m']}"
                )
        if "ratio_vs_nginx" in report[kind]:
            print(f"{kind:<9} mediacore-edge / nginx = {report[kind]['ratio_vs_nginx']}")
    ll = report["ll_viewers"]
    print(f"wrk: {threads} threads, {connections} connections; {workers} worker(s) each")
    print(f"load average (1 min) before the run: {report['load_1m_before']} on {report['cores']} cores")
    print(
        f"LL-HLS viewers on one {workers}-worker edge from {ll['client_processes']} processes: "
        f"{ll['viewers']['viewers']} (started {ll['viewers']['started']}, "
        f"stalls {ll['viewers']['stalls']}, latency p50 {ll['viewers']['latency_p50_s']} s, "
        f"errors {ll['viewers']['errors']}, load {report['load_1m_viewers']})"
    )
    print(
        f"the viewers' requests: {ll['requests_per_s']} per second; client processes at niceness "
        f"{ll['client_niceness']}"
    )
    print(f"part delay p99 of the viewers themselves: {ll['viewers']['part_delay_p99_s']} s")
    print(
        f"part delay p99: via edge {ll['part_delay_p99_edge_s']:.3f} s, "
        f"from origin {ll['part_delay_p99_origin_s']:.3f} s"
    )
    print(f"origin media requests per part produced: {ll['origin_media_requests_per_part']}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"results written to {out}")
    return report

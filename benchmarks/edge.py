"""`mediacore-bench edge`: the edge against nginx serving the same cached objects.

One origin with a live stream; in front of it a `mediacore edge` process and nginx
(proxy_cache, one worker), both warmed with the same segment and playlist. wrk (one
thread, N connections, from loopback) measures requests/s and bytes/s for a cached
segment and for the live playlist on each. Then V LL-HLS viewers play through the edge
while the project's client measures part delay through the edge and directly from the
origin, and the origin counts how many part requests reached it per part produced.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.ingest import free_port, wait_port
from benchmarks.live import fetch_text, live_origin, metric_sum, start_edge
from benchmarks.peers import start_nginx_proxy
from player_client.llhls import follow
from player_client.player import percentile, run_viewers, summarize

UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url],
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
    }


def run(seconds: float, connections: int, viewers: int, out: Path | None) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("mediacore-bench edge needs wrk (apt-get install wrk)")
    report: dict = {"suite": "edge", "connections": connections, "seconds": seconds}
    with (
        live_origin() as (http_port, admin_port, _),
        tempfile.TemporaryDirectory(prefix="mediacore-bench-edge-") as tmp,
    ):
        origin = f"http://127.0.0.1:{http_port}"
        origin_metrics = f"http://127.0.0.1:{admin_port}/metrics"
        edge_port, edge = start_edge(origin)
        nginx_port = free_port()
        nginx = start_nginx_proxy(Path(tmp), nginx_port, f"127.0.0.1:{http_port}")
        try:
            targets = {"mediacore-edge": f"http://127.0.0.1:{edge_port}"}
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
                    report.setdefault(kind, {})[name] = wrk(base + path, seconds, connections)
            if "nginx" in targets:
                for kind in objects:
                    ours, theirs = report[kind]["mediacore-edge"], report[kind]["nginx"]
                    report[kind]["ratio_vs_nginx"] = (
                        round(ours["requests_per_s"] / theirs["requests_per_s"], 3)
                        if theirs["requests_per_s"]
                        else None
                    )

            # LL-HLS viewers through the edge; one probe client through the edge, one direct.
            before = fetch_text(origin_metrics)
            edge_base = targets["mediacore-edge"]

            async def load() -> tuple[list, object, object]:
                return await asyncio.gather(
                    run_viewers(f"{edge_base}/live/bench/ll.m3u8", viewers, 20, True),
                    follow(f"{edge_base}/live/bench/ll.m3u8", 20),
                    follow(f"{origin}/live/bench/ll.m3u8", 20),
                )

            print(f"{viewers} LL-HLS viewers through the edge for 20 s ...", file=sys.stderr)
            started = time.monotonic()
            stats, via_edge, direct = asyncio.run(load())
            elapsed = time.monotonic() - started
            after = fetch_text(origin_metrics)
            part_requests = metric_sum(after, "mediacore_http_requests_total", "/ll/{name}.{ext}") - metric_sum(
                before, "mediacore_http_requests_total", "/ll/{name}.{ext}"
            )
            # Video parts produced meanwhile (viewers follow the video rendition), one per
            # 0.2 s; the direct probe fetches each of them from the origin once as well.
            produced = elapsed / 0.2
            report["ll_viewers"] = {
                "viewers": summarize(stats),
                "part_delay_p99_edge_s": percentile(via_edge.part_delays, 0.99),  # type: ignore[attr-defined]
                "part_delay_p99_origin_s": percentile(direct.part_delays, 0.99),  # type: ignore[attr-defined]
                "origin_media_requests_per_part": round((part_requests - elapsed / 0.2) / produced, 2),
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
                    f"  non-2xx {figures['non_2xx']:.0f}"
                )
        if "ratio_vs_nginx" in report[kind]:
            print(f"{kind:<9} mediacore-edge / nginx = {report[kind]['ratio_vs_nginx']}")
    ll = report["ll_viewers"]
    print(
        f"LL-HLS viewers on one edge: {ll['viewers']['viewers']} (started {ll['viewers']['started']}, "
        f"stalls {ll['viewers']['stalls']}, latency p50 {ll['viewers']['latency_p50_s']} s)"
    )
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

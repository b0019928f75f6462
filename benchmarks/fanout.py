"""`mediacore-bench fanout`: a CDN fan-out in miniature.

An origin with a live stream, E edge processes (with --tiers 2, behind one mid-tier edge)
and V simulated viewers spread over the edges by consistent hashing. Reports what reached
the origin, the edges' hit ratio, the origin offload, and what viewers saw (latency from
PROGRAM-DATE-TIME, stalls); writes JSON and a PNG plot.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import sys
from pathlib import Path

from benchmarks.live import fetch_text, live_origin, metric_sum, start_edge
from player_client.player import ViewerStats, run_viewers, summarize


class HashRing:
    """Consistent hashing with virtual nodes: adding an edge moves ~1/E of the viewers."""

    def __init__(self, nodes: list[str], vnodes: int = 64) -> None:
        self._ring = sorted((self._hash(f"{node}#{i}"), node) for node in nodes for i in range(vnodes))
        self._keys = [h for h, _ in self._ring]

    @staticmethod
    def _hash(key: str) -> int:
        return int.from_bytes(hashlib.md5(key.encode()).digest()[:8], "big")

    def node(self, key: str) -> str:
        index = bisect.bisect(self._keys, self._hash(key)) % len(self._ring)
        return self._ring[index][1]


def _edge_figures(url: str) -> dict[str, float]:
    text = fetch_text(f"{url}/metrics")
    return {
        "hits": metric_sum(text, "mediacore_edge_hits_total"),
        "misses": metric_sum(text, "mediacore_edge_misses_total"),
        "upstream_requests": metric_sum(text, "mediacore_edge_upstream_requests_total"),
        "bytes_out": metric_sum(text, "mediacore_edge_bytes_out_total"),
    }


def plot(report: dict, stats: list[ViewerStats], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    samples = [x for s in stats for x in s.latencies[len(s.latencies) // 4 :]]
    left.hist(samples, bins=40, color="#3a7bd5")
    left.set_xlabel("viewer latency (s, now - PDT at playhead)")
    left.set_ylabel("samples")
    left.set_title(f"{report['viewers']['viewers']} viewers, {report['edges']} edges")
    tiers = ["viewers → edges", "edges → upstream", "→ origin"]
    values = [report["viewer_requests"], report["leaf_upstream_requests"], report["origin_requests"]]
    right.bar(tiers, values, color=["#3a7bd5", "#f39c12", "#c0392b"])
    right.set_yscale("log")
    right.set_ylabel("HTTP requests")
    right.set_title(f"origin offload {report['origin_offload']:.1%}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(edges: int, tiers: int, viewers: int, seconds: float, low_latency: bool, out: Path | None) -> dict:
    with live_origin() as (http_port, admin_port, _):
        origin = f"http://127.0.0.1:{http_port}"
        origin_metrics = f"http://127.0.0.1:{admin_port}/metrics"
        processes = []
        upstream = origin
        mid_url = None
        try:
            if tiers >= 2:
                mid_port, mid = start_edge(origin)
                processes.append(mid)
                mid_url = upstream = f"http://127.0.0.1:{mid_port}"
            leaves = []
            for _ in range(edges):
                port, proc = start_edge(upstream)
                processes.append(proc)
                leaves.append(f"http://127.0.0.1:{port}")
            before = fetch_text(origin_metrics)
            ring = HashRing(leaves)
            per_edge: dict[str, int] = {leaf: 0 for leaf in leaves}
            for i in range(viewers):
                per_edge[ring.node(f"viewer-{i}")] += 1
            playlist = "ll.m3u8" if low_latency else "index.m3u8"

            async def everyone() -> list[ViewerStats]:
                groups = await asyncio.gather(
                    *(
                        run_viewers(f"{leaf}/live/bench/{playlist}", n, seconds, low_latency)
                        for leaf, n in per_edge.items()
                        if n
                    )
                )
                return [s for group in groups for s in group]

            print(
                f"{viewers} viewers on {edges} edges ({'LL-HLS' if low_latency else 'HLS'}, {seconds:g} s) ...",
                file=sys.stderr,
            )
            stats = asyncio.run(everyone())
            after = fetch_text(origin_metrics)
            leaf_figures = [_edge_figures(leaf) for leaf in leaves]
            mid_figures = _edge_figures(mid_url) if mid_url else None
        finally:
            for proc in processes:
                proc.terminate()
            for proc in processes:
                proc.wait(10)
    origin_requests = metric_sum(after, "mediacore_http_requests_total") - metric_sum(
        before, "mediacore_http_requests_total"
    )
    origin_bytes = metric_sum(after, "mediacore_http_response_bytes_total") - metric_sum(
        before, "mediacore_http_response_bytes_total"
    )
    hits = sum(f["hits"] for f in leaf_figures)
    misses = sum(f["misses"] for f in leaf_figures)
    delivered = sum(f["bytes_out"] for f in leaf_figures)
    report = {
        "suite": "fanout",
        "edges": edges,
        "tiers": tiers,
        "mode": "ll-hls" if low_latency else "hls",
        "seconds": seconds,
        "viewers_per_edge": list(per_edge.values()),
        "viewer_requests": sum(s.requests for s in stats),
        "leaf_upstream_requests": sum(f["upstream_requests"] for f in leaf_figures),
        "mid_tier_upstream_requests": mid_figures["upstream_requests"] if mid_figures else None,
        "origin_requests": int(origin_requests),
        "origin_bytes": int(origin_bytes),
        "edge_hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        # Collapsed misses never reach the upstream either: the share of viewer requests
        # the leaf edges answered without an upstream request of their own.
        "edge_offload_ratio": round(1 - sum(f["upstream_requests"] for f in leaf_figures) / (hits + misses), 4)
        if hits + misses
        else None,
        "bytes_to_viewers": int(delivered),
        "origin_offload": round(1 - origin_bytes / delivered, 4) if delivered else 0.0,
        "viewers": summarize(stats),
    }
    rows = [
        ("viewers / edges / tiers", f"{viewers} / {edges} / {tiers}"),
        ("viewer requests", report["viewer_requests"]),
        ("edge -> upstream requests", report["leaf_upstream_requests"]),
        ("origin requests", report["origin_requests"]),
        ("origin MB / MB to viewers", f"{origin_bytes / 1e6:.1f} / {delivered / 1e6:.1f}"),
        ("origin offload", f"{report['origin_offload']:.2%}"),
        ("edge cache hit ratio (fresh hits)", report["edge_hit_ratio"]),
        ("requests answered without upstream", report["edge_offload_ratio"]),
        (
            "viewer latency p50 / p99 (s)",
            f"{report['viewers']['latency_p50_s']} / {report['viewers']['latency_p99_s']}",
        ),
        ("viewers started / stalls", f"{report['viewers']['started']} / {report['viewers']['stalls']}"),
    ]
    for label, value in rows:
        print(f"{label:<30} {value}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        png = out.with_suffix(".png")
        plot(report, stats, png)
        print(f"results written to {out} and {png}")
    return report

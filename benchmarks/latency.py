"""`mediacore-bench latency`: live latency of LL-HLS, as players see it.

A generated 720p30 clip is pushed in real time with ffmpeg to `mediacore serve` (default
settings: 0.2 s parts, PART-TARGET 0.22 s, PART-HOLD-BACK 3 x PART-TARGET). Then, at the
same time: hls.js in lowLatencyMode in headless Chromium (its `latency`, and now minus the
PROGRAM-DATE-TIME of the playhead), and the project's own LL-HLS client (part delay and
modelled latency). Plain HLS in hls.js is measured after, for reference. The server's
histogram gives the time from a part being complete to the answer of a request blocked on
it.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from benchmarks.live import live_origin
from player_client.llhls import follow
from player_client.player import percentile

ROOT = Path(__file__).resolve().parent.parent


def histogram_quantile(metrics: str, name: str, kind: str, q: float) -> float | None:
    """Upper bound of the bucket holding quantile q of a Prometheus histogram."""
    buckets = []
    for line in metrics.splitlines():
        m = re.match(rf'{name}_bucket{{kind="{kind}",le="([^"]+)"}} (\S+)', line)
        if m:
            buckets.append((float(m.group(1)), float(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return None


async def browser(url: str, seconds: float) -> dict:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "e2e" / "play.mjs"),
        url,
        str(seconds),
        "40",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    out, _ = await proc.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


async def ticker(seconds: float, label: str) -> None:
    for _ in tqdm(range(int(seconds)), desc=label, unit="s", file=sys.stderr, leave=False):
        await asyncio.sleep(1)


def buffered_ahead(sample: dict) -> float | None:
    """Seconds buffered past the playhead in one of play.mjs's samples."""
    t = sample["t"]
    return next((round(end - t, 3) for start, end in sample.get("buffered", []) if start <= t <= end), None)


def stall_moments(page: dict) -> list[dict]:
    """Each second of play.mjs's samples in which the stall count rose, with what the
    second before it held: how much was buffered ahead, the latency, the catch-ups so far.
    A stall after a catch-up jump with little buffered points at the jump; one with a
    second buffered at the sample before points at the delivery."""
    samples = [page.get("start") or {}, *page.get("samples", [])]
    moments = []
    for i in range(1, len(samples)):
        before, now = samples[i - 1], samples[i]
        if now.get("stalls", 0) > before.get("stalls", 0):
            moments.append(
                {
                    "second": i,
                    "ahead_before_s": buffered_ahead(before) if before else None,
                    "ahead_s": buffered_ahead(now),
                    "latency_before_s": before.get("latency"),
                    "catch_ups_before": before.get("catchUps"),
                    "catch_ups": now.get("catchUps"),
                }
            )
    return moments


async def measure(http_port: int, admin_port: int, seconds: float) -> dict:
    base = f"http://127.0.0.1:{http_port}"
    ll_page, client, _ = await asyncio.gather(
        browser(f"{base}/watch/bench?ll=1", seconds),
        follow(f"{base}/live/bench/ll.m3u8", seconds + 5),
        ticker(seconds + 5, "LL-HLS"),
    )
    plain_page, _ = await asyncio.gather(browser(f"{base}/watch/bench?ll=0", seconds / 2), ticker(seconds / 2, "HLS"))
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()

    def settle(samples: list[dict], key: str) -> list[float]:
        return [s[key] for s in samples[len(samples) // 4 :] if s.get(key) is not None]  # after catch-up

    name = "mediacore_llhls_blocked_response_seconds"
    return {
        "hlsjs_ll": {
            "latency_median_s": statistics.median(settle(ll_page["samples"], "latency") or [float("nan")]),
            "pdt_latency_median_s": statistics.median(settle(ll_page["samples"], "pdtLatency") or [float("nan")]),
            "stalls": ll_page.get("stallsAfterStart"),
            "stall_moments": stall_moments(ll_page),
            "timeline": [
                {
                    "t": s["t"],
                    "latency": s.get("latency"),
                    "ahead": buffered_ahead(s),
                    "stalls": s.get("stalls"),
                    "catch_ups": s.get("catchUps"),
                }
                for s in ll_page.get("samples", [])
            ],
            "catch_ups": (ll_page.get("end") or {}).get("catchUps"),
            "fatal": ll_page.get("fatal"),
            "played_s": round(ll_page.get("advanced") or 0, 1),
        },
        "hlsjs_plain_hls": {
            "latency_median_s": statistics.median(settle(plain_page["samples"], "latency") or [float("nan")]),
            "pdt_latency_median_s": statistics.median(settle(plain_page["samples"], "pdtLatency") or [float("nan")]),
            "stalls": plain_page.get("stallsAfterStart"),
        },
        "player_client": {
            "part_delay_median_s": percentile(client.part_delays, 0.5),
            "part_delay_p99_s": percentile(client.part_delays, 0.99),
            "latency_median_s": percentile(client.latencies, 0.5),
            "startup_s": client.startup_seconds,
            "parts": client.parts,
            "errors": client.errors[:5],
        },
        "blocked_response": {
            "playlist_p50_s_at_most": histogram_quantile(metrics, name, "playlist", 0.5),
            "playlist_p99_s_at_most": histogram_quantile(metrics, name, "playlist", 0.99),
            "part_p50_s_at_most": histogram_quantile(metrics, name, "part", 0.5),
            "part_p99_s_at_most": histogram_quantile(metrics, name, "part", 0.99),
        },
    }


def run(seconds: float, out: Path | None, part_duration: float | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="mediacore-bench-latency-") as tmp:
        config = None
        if part_duration is not None:  # the low-latency preset, or any other part length
            config = Path(tmp) / "latency.toml"
            config.write_text(f"[llhls]\npart_duration = {part_duration}\n")
        with live_origin(config=config) as (http_port, admin_port, _):
            report = asyncio.run(measure(http_port, admin_port, seconds))

    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    rows = [
        ("hls.js LL-HLS: latency (median)", report["hlsjs_ll"]["latency_median_s"]),
        ("hls.js LL-HLS: now - PDT of playhead (median)", report["hlsjs_ll"]["pdt_latency_median_s"]),
        ("hls.js LL-HLS: stalls after start", report["hlsjs_ll"]["stalls"]),
        ("hls.js LL-HLS: catch-up jumps of the watch page", report["hlsjs_ll"]["catch_ups"]),
        ("hls.js plain HLS: latency (median)", report["hlsjs_plain_hls"]["latency_median_s"]),
        ("hls.js plain HLS: now - PDT of playhead (median)", report["hlsjs_plain_hls"]["pdt_latency_median_s"]),
        ("player client: part delay after its last frame (median)", report["player_client"]["part_delay_median_s"]),
        ("player client: part delay (p99)", report["player_client"]["part_delay_p99_s"]),
        ("player client: modelled latency (median)", report["player_client"]["latency_median_s"]),
        ("blocked playlist answered after part complete: p50 <=", report["blocked_response"]["playlist_p50_s_at_most"]),
        ("blocked playlist answered after part complete: p99 <=", report["blocked_response"]["playlist_p99_s_at_most"]),
        ("blocked part answered after part complete: p50 <=", report["blocked_response"]["part_p50_s_at_most"]),
        ("blocked part answered after part complete: p99 <=", report["blocked_response"]["part_p99_s_at_most"]),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {fmt(value)} {'s' if isinstance(value, float) else ''}")
    for moment in report["hlsjs_ll"]["stall_moments"]:
        print(f"hls.js LL-HLS stall in second {moment['second']} of playback: {moment}")
    report = {"suite": "latency", "seconds": seconds, "part_duration": part_duration, **report}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
        print(f"results written to {out}")
    return report

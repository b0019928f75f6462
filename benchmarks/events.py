"""`mediacore-bench events`: behaviour events offered to `POST /api/audience/events` at a target
rate from concurrent clients (separate processes, loopback) while a node serves a live
stream; the playlist's response time is measured with and without the load.

A `mediacore serve` process runs the audience plugin (SQLite store) with the demo publisher
pushing one stream over RTMP. A prober GETs the stream's playlist every PROBE_PERIOD seconds
for `seconds` without load, then for `seconds` while `clients` processes each post batches of
100 events at their share of `rate` events/s (`--via websocket`: as messages on one
WebSocket /live/STREAM/events per connection, as a page sends them). Reported: p50/p99/max
playlist time in both phases and the p99 difference (goal ≤ 10 ms), events offered /
accepted / dropped, and the statuses (101 for WebSocket messages)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.chat import _free_port, _percentile, _wait_port
from mediacore.access.identity import Role, issue
from mediacore.app.config import DemoConfig
from mediacore.app.demo import demo_command

SECRET = "an-events-bench-secret-of-32-bytes-or-more"
BATCH = 100
"""Events per POST (the route's maximum)."""
CONNECTIONS = 16
"""Concurrent connections per client process."""
PROBE_PERIOD = 0.02
"""Seconds between playlist requests of the prober."""
GOAL_MS = 10.0
WARM_UP = 0.5
"""Seconds between the start of the load and of the measured window (the clients open their
connections), and between its end and the end of the load."""


def _server(data: Path, http_port: int, rtmp_port: int) -> subprocess.Popen[bytes]:
    config = data / "node.toml"
    config.write_text(
        "\n".join(
            [
                "[server]",
                'host = "127.0.0.1"',
                f"http_port = {http_port}",
                f"rtmp_port = {rtmp_port}",
                f"rtsp_port = {_free_port()}",
                f'data_dir = "{data / "node"}"',
                "[admin]",
                "port = 0",
                "[auth]",
                f'jwt_secret = "{SECRET}"',
                "[http]",
                "max_connections_per_ip = 10000",
                "[plugins]",
                'enabled = ["audience"]',
                "[audience]",
                "queue_size = 1000000",
                "update_interval = 1.0",
            ]
        )
        + "\n"
    )
    exe = shutil.which("mediacore") or str(Path(sys.executable).parent / "mediacore")
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_port(http_port)
    return proc


async def _clients_main(url: str, rate: float, seconds: float, index: int, result: Any, via: str) -> None:
    token = issue(SECRET.encode(), f"bench-{index}", Role.VIEWER, 3600, time.time())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    kinds = ["like", "comment", "watch_start", "gift"]
    bodies = [
        json.dumps({"events": [{"kind": kinds[(b + k) % 4], "stream": f"s{(b * 7 + k) % 40}"} for k in range(BATCH)]})
        for b in range(16)
    ]
    posts_per_second = rate / BATCH
    statuses: dict[str, int] = {}
    sent = accepted = dropped = 0
    start = time.monotonic()
    end = start + seconds
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(w: int) -> None:
            nonlocal sent, accepted, dropped
            socket = await http.ws_connect(url, headers=headers) if via == "websocket" else None
            n = w
            while True:
                due = start + n / posts_per_second
                now = time.monotonic()
                if due >= end:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                n += CONNECTIONS
                try:
                    if socket is not None:
                        await socket.send_str(bodies[n % len(bodies)])
                        status, body = "101", (await socket.receive()).data
                    else:
                        async with http.post(url, data=bodies[n % len(bodies)], headers=headers) as r:
                            status, body = str(r.status), await r.read()
                    statuses[status] = statuses.get(status, 0) + 1
                    sent += BATCH
                    answer = json.loads(body)
                    if "accepted" in answer:
                        accepted += answer["accepted"]
                        dropped += answer["dropped"]
                except aiohttp.ClientError:
                    statuses["error"] = statuses.get("error", 0) + 1
            if socket is not None:
                await socket.close()

        await asyncio.gather(*(worker(w) for w in range(CONNECTIONS)))
    result.put({"sent": sent, "accepted": accepted, "dropped": dropped, "statuses": statuses})


def _client_process(url: str, rate: float, seconds: float, index: int, result: Any, go: Any, via: str) -> None:
    result.put({"ready": index})
    go.wait()
    asyncio.run(_clients_main(url, rate, seconds, index, result, via))


async def _probe(url: str, seconds: float) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            async with http.get(url) as r:
                await r.read()
                assert r.status == 200, r.status
            times.append(time.perf_counter() - start)
            await asyncio.sleep(PROBE_PERIOD)
    return times


async def _wait_playlist(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as r:
                    if r.status == 200 and (await r.text()).count("#EXTINF") >= 2:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{url} did not list two segments within {timeout} s")


def _summary(times: list[float]) -> dict[str, float]:
    return {
        "requests": len(times),
        "p50_ms": round(_percentile(times, 50) * 1000, 2),
        "p99_ms": round(_percentile(times, 99) * 1000, 2),
        "max_ms": round(max(times) * 1000, 2) if times else float("nan"),
    }


def run(rate: float, clients: int, seconds: float, out: Path, via: str = "http") -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        http_port, rtmp_port = _free_port(), _free_port()
        try:
            server = _server(data, http_port, rtmp_port)
            procs.append(server)
            demo = subprocess.Popen(
                demo_command(f"rtmp://127.0.0.1:{rtmp_port}/live/bench", DemoConfig(width=320, height=180)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(demo)
            playlist = f"http://127.0.0.1:{http_port}/live/bench/index.m3u8"
            asyncio.run(_wait_playlist(playlist))
            idle = asyncio.run(_probe(playlist, seconds))
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            go = ctx.Event()
            url = f"http://127.0.0.1:{http_port}/api/audience/events"
            if via == "websocket":
                url = f"ws://127.0.0.1:{http_port}/live/bench/events"
            workers = [
                ctx.Process(target=_client_process, args=(url, rate / clients, seconds, i, queue, go, via))
                for i in range(clients)
            ]
            for w in workers:
                w.start()
            # The clients' interpreters start (imports: a second of both cores) before the load
            # and the measured window begin; then WARM_UP for their connections.
            for _ in workers:
                queue.get(timeout=60)
            go.set()
            time.sleep(WARM_UP)
            loaded = asyncio.run(_probe(playlist, seconds - 2 * WARM_UP))
            results = [queue.get(timeout=seconds + 60) for _ in workers]
            for w in workers:
                w.join(10)
        finally:
            for proc in reversed(procs):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    sent = sum(r["sent"] for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    report: dict[str, Any] = {
        "target_events_per_second": rate,
        "via": via,
        "clients": clients,
        "connections_per_client": CONNECTIONS,
        "seconds": seconds,
        "events_offered": sent,
        "events_per_second_offered": round(sent / seconds, 1),
        "events_accepted": sum(r["accepted"] for r in results),
        "events_dropped": sum(r["dropped"] for r in results),
        "statuses": statuses,
        "playlist_idle": _summary(idle),
        "playlist_loaded": _summary(loaded),
    }
    delta = report["playlist_loaded"]["p99_ms"] - report["playlist_idle"]["p99_ms"]
    report["p99_delay_ms"] = round(delta, 2)
    report["goal_ms"] = GOAL_MS
    report["met"] = delta <= GOAL_MS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(
        f"offered {report['events_per_second_offered']:.0f} events/s ({sent} over {seconds:g} s, "
        f"{report['events_accepted']} accepted, {report['events_dropped']} dropped, statuses {statuses})"
    )
    idle_s, loaded_s = report["playlist_idle"], report["playlist_loaded"]
    print(
        f"playlist p50/p99 idle {idle_s['p50_ms']}/{idle_s['p99_ms']} ms, under load "
        f"{loaded_s['p50_ms']}/{loaded_s['p99_ms']} ms: p99 +{delta:.2f} ms (goal ≤ {GOAL_MS:g})"
    )
    print(f"wrote {out}")
    return report


TICK = 0.002
"""Seconds between the loop-lag prober's timer ticks."""
SWITCH_INTERVALS = (0.005, 0.001)
"""GIL switch intervals compared by `loop_lag`: Python's default and `mediacore serve`'s."""


async def _ticks(seconds: float) -> list[float]:
    """How late an asyncio timer of TICK fires, for `seconds`."""
    lags = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        await asyncio.sleep(TICK)
        lags.append(max(0.0, time.perf_counter() - start - TICK))
    return lags


def _busy_recommender(stop: threading.Event) -> None:
    """Feed and refresh a recommender 50,000 events at a time until `stop`."""
    from plugins.audience.cf import Recommender
    from plugins.audience.events import Event, IdSource, Kind

    kinds = [Kind.LIKE, Kind.COMMENT, Kind.WATCH_START, Kind.GIFT]
    recommender, new_id, now = Recommender(), IdSource(), time.time()
    while not stop.is_set():
        for _ in range(100):
            recommender.ingest([Event(new_id(), kinds[k % 4], f"u{k % 50}", now, f"s{k % 40}") for k in range(500)])
        recommender.refresh(now)


def loop_lag(rounds: int, seconds: float, out: Path) -> dict[str, Any]:
    """The event loop's timer lag while a worker thread feeds and refreshes a recommender on
    50,000 events at a time without pause (the audience plugin's refresh thread, always
    busy), at each of SWITCH_INTERVALS, alternating for `rounds` rounds: the GIL's part of
    the playlist delay, apart from the rest of the machine."""
    report: dict[str, Any] = {"tick_ms": TICK * 1000, "seconds": seconds, "rounds": []}
    before = sys.getswitchinterval()
    try:
        for _ in range(rounds):
            row = {}
            for interval in SWITCH_INTERVALS:
                sys.setswitchinterval(interval)
                stop = threading.Event()
                worker = threading.Thread(target=_busy_recommender, args=(stop,))
                worker.start()
                try:
                    lags = asyncio.run(_ticks(seconds))
                finally:
                    stop.set()
                    worker.join()
                row[f"{interval * 1000:g}ms"] = _summary(lags)
            report["rounds"].append(row)
    finally:
        sys.setswitchinterval(before)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for i, row in enumerate(report["rounds"]):
        print(
            f"round {i + 1}: "
            + ", ".join(f"switch {k}: lag p50/p99 {v['p50_ms']}/{v['p99_ms']} ms" for k, v in row.items())
        )
    print(f"wrote {out}")
    return report

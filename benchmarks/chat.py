"""`mediacore-bench chat`: N WebSocket clients in one chat room (spread over several processes,
so the load generator is not the bottleneck), M senders publishing `--rate` messages per second
in total; delivered messages per second, p50/p99 delivery latency (sender's clock to
receiver's clock, one machine), losses and duplicates. `--redis` puts the room on a
redis-server it starts; `--nodes 2` (with --redis) runs two `mediacore serve` processes and
spreads the clients over them.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from mediacore.access.identity import Role, issue

SECRET = "bench-secret-bench-secret-bench-secret!"
ROOM = "bench"
CLIENTS_PER_PROCESS = 250
"""WebSocket clients one load process holds: one core reads ~20,000 small frames/s."""
CONNECT_TIMEOUT = 60.0
"""Seconds the clients may take to connect and receive their history."""
DRAIN = 3.0
"""Seconds the receivers keep reading after the last message was sent."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def _receivers(urls: list[str], ready: Any, start_at: Any, result: Any) -> None:
    received: dict[int, int] = {}
    latencies: list[float] = []
    duplicates = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = []
        for url in urls:
            for _ in range(5):
                try:
                    sockets.append(await http.ws_connect(url, autoping=True))
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.5)
        ready.put(len(sockets))

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal duplicates
            seen: set[int] = set()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                now = time.time()
                event = json.loads(msg.data)
                if event["type"] != "chat":
                    continue
                _, number, sent = event["text"].split()
                n = int(number)
                if n in seen:
                    duplicates += 1
                    continue
                seen.add(n)
                received[n] = received.get(n, 0) + 1
                latencies.append(now - float(sent))

        tasks = [asyncio.create_task(read(ws)) for ws in sockets]
        end = start_at.get()
        await asyncio.sleep(max(0.0, end - time.time()))
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    result.put({"connected": len(sockets), "received": received, "latencies": latencies, "duplicates": duplicates})


def _receiver_process(urls: list[str], ready: Any, start_at: Any, result: Any) -> None:
    try:
        import uvloop

        uvloop.run(_receivers(urls, ready, start_at, result))
    except ImportError:
        asyncio.run(_receivers(urls, ready, start_at, result))


async def _send(urls: list[str], rate: float, seconds: float) -> tuple[int, int]:
    """Send rate*seconds messages round-robin over the senders; (accepted, refused)."""
    accepted = refused = 0
    async with aiohttp.ClientSession() as http:
        senders = [await http.ws_connect(u) for u in urls]
        for ws in senders:
            await ws.receive()  # history
        total = int(rate * seconds)
        t0 = time.monotonic()
        for n in range(total):
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await senders[n % len(senders)].send_str(
                json.dumps({"type": "chat", "text": f"bench {n} {time.time():.6f}"})
            )
        await asyncio.sleep(1.0)
        for ws in senders:
            while True:
                try:
                    msg = await ws.receive(timeout=0.2)
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(msg.data)
                if event["type"] == "error":
                    refused += 1
            await ws.close()
        accepted = total - refused
    return accepted, refused


def _server(port: int, data: Path, redis_url: str, clients: int) -> subprocess.Popen[bytes]:
    config = data / f"node-{port}.toml"
    chat = [
        "[chat]",
        f'redis_url = "{redis_url}"',
        "moderator_rate_messages = 1000000",
        f"max_connections_per_address = {clients + 100}",
    ]
    config.write_text(
        "\n".join(
            [
                "[server]",
                'host = "127.0.0.1"',
                f"http_port = {port}",
                f"rtmp_port = {_free_port()}",
                f"rtsp_port = {_free_port()}",
                f'data_dir = "{data / str(port)}"',
                "[admin]",
                "port = 0",
                "[auth]",
                f'jwt_secret = "{SECRET}"',
                "[http]",
                f"max_connections_per_ip = {clients + 100}",
                "[plugins]",
                'enabled = ["chat"]',
                *chat,
            ]
        )
        + "\n"
    )
    exe = shutil.which("mediacore") or str(Path(sys.executable).parent / "mediacore")
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _wait_port(port)
    return proc


def _redis(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(port)
    return proc, f"redis://127.0.0.1:{port}/0"


def run(clients: int, senders: int, rate: float, seconds: float, redis: bool, nodes: int, out: Path | None) -> dict:
    if nodes > 1 and not redis:
        raise SystemExit("--nodes above 1 needs --redis")
    # Every client is a file descriptor here and in the server (which inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * clients + 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * clients + 1024), hard))
    data = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    workers: list[Any] = []
    redis_url = ""
    try:
        if redis:
            proc, redis_url = _redis(data)
            procs.append(proc)
        ports = [_free_port() for _ in range(nodes)]
        servers = [_server(p, data, redis_url, clients) for p in ports]
        procs += servers
        now = time.time()
        viewer_urls = [f"http://127.0.0.1:{ports[i % nodes]}/live/{ROOM}/chat" for i in range(clients)]
        sender_urls = [
            f"http://127.0.0.1:{ports[i % nodes]}/live/{ROOM}/chat?access_token="
            + issue(SECRET.encode(), f"sender{i}", Role.HOST, 3600, now)
            for i in range(senders)
        ]
        ctx = mp.get_context("spawn")
        ready, start_at, result = ctx.Queue(), ctx.Queue(), ctx.Queue()
        groups = [viewer_urls[i : i + CLIENTS_PER_PROCESS] for i in range(0, clients, CLIENTS_PER_PROCESS)]
        workers = [ctx.Process(target=_receiver_process, args=(g, ready, start_at, result)) for g in groups]
        for w in workers:
            w.start()
        connected = sum(ready.get(timeout=CONNECT_TIMEOUT) for _ in workers)
        end = time.time() + seconds + DRAIN + 1.5
        for _ in workers:
            start_at.put(end)
        t0 = time.monotonic()
        accepted, refused = asyncio.run(_send(sender_urls, rate, seconds))
        send_seconds = time.monotonic() - t0
        reports = [result.get(timeout=seconds + 120) for _ in workers]
        for w in workers:
            w.join(30)
        latencies = [x for r in reports for x in r["latencies"]]
        delivered = len(latencies)
        expected = accepted * connected
        report = {
            "clients": clients,
            "connected": connected,
            "senders": senders,
            "nodes": nodes,
            "redis": redis,
            "rate_in": rate,
            "seconds": seconds,
            "sent": accepted + refused,
            "refused": refused,
            "delivered": delivered,
            "deliveries_per_second": round(delivered / seconds, 1),
            "p50_ms": round(_percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(_percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
            "lost": expected - delivered,
            "duplicates": sum(r["duplicates"] for r in reports),
            "send_seconds": round(send_seconds, 2),
            "load_processes": len(workers),
            "cpus": os.cpu_count(),
        }
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(data, ignore_errors=True)
    print(json.dumps(report, indent=2))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    return report

"""`mediacore-bench commerce`: purchase attempts per second and their p50 / p99 latency over
HTTP, against a running `mediacore serve` with the commerce plugin, for the SQLite and the
Redis backend.

The bench starts the server itself (a temporary configuration; for Redis also a
`redis-server` without persistence), creates a product and a flash sale with half as many
units as there are attempts (no per-user limit that matters), then N concurrent buyers
(each its own user and JWT) send `POST /api/orders`, each with a fresh Idempotency-Key,
until every attempt was made: half create orders, half are refused as sold out, as in a
flash sale. The server runs with its defaults (SQLite synchronous=FULL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from mediacore.access.identity import Role, issue

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _redis(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/install-system-deps.sh)")
    port = _free_port()
    log = directory / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(directory), "--maxclients", "10000"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

        def pings() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        try:
            _wait(pings, "redis-server", proc, log)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)


@contextlib.contextmanager
def _server(directory: Path, secret: str, redis_url: str) -> Iterator[str]:
    port = _free_port()
    config = directory / "mediacore.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nrtmp_port = {_free_port()}\nrtsp_port = {_free_port()}\n'
        f'http_port = {port}\ndata_dir = "{directory / "data"}"\n[admin]\nport = 0\n'
        f'[auth]\njwt_secret = "{secret}"\n[commerce]\nredis_url = "{redis_url}"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    log = directory / "server.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "mediacore.app.cli", "serve", "--config", str(config)]
        command += ["--log-level", "warning"]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/products", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        try:
            _wait(ready, "mediacore serve", proc, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(proc)


async def _load(base: str, secret: str, buyers: int, attempts: int) -> dict[str, Any]:
    now = time.time()
    admin = {"Authorization": "Bearer " + issue(secret.encode(), "bench-admin", Role.ADMIN, 3600, now)}
    tokens = [issue(secret.encode(), f"buyer-{n}", Role.VIEWER, 3600, now) for n in range(buyers)]
    connector = aiohttp.TCPConnector(limit=min(buyers, 256))
    async with aiohttp.ClientSession(base, connector=connector) as http:
        async with http.post("/api/products", headers=admin, json={"title": "Bench lamp", "price": 4900}) as r:
            product = await r.json()
        sale_body = {
            "product_id": product["id"],
            "stock": attempts // 2,
            "price": 2900,
            "starts_at": now - 60,
            "ends_at": now + 3600,
            "per_user_limit": 10_000,
        }
        async with http.post("/api/sales", headers=admin, json=sale_body) as r:
            sale_id = (await r.json())["id"]
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        left = attempts

        async def buyer(n: int) -> None:
            nonlocal left
            headers = {"Authorization": f"Bearer {tokens[n]}"}
            while left > 0:
                left -= 1
                started = time.perf_counter()
                key = {"Idempotency-Key": uuid.uuid4().hex}
                async with http.post("/api/orders", headers=headers | key, json={"sale_id": sale_id}) as r:
                    await r.read()
                latencies.append(time.perf_counter() - started)
                statuses[r.status] = statuses.get(r.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(buyer(n) for n in range(buyers)))
        elapsed = time.perf_counter() - started
        async with http.get(f"/api/sales/{sale_id}") as r:
            remaining = (await r.json())["remaining"]
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "attempts": len(latencies),
        "buyers": buyers,
        "seconds": round(elapsed, 2),
        "attempts_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "remaining": remaining,
    }


def run(buyers: int, attempts: int, backends: list[str], out: Path) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    report: dict[str, Any] = {"suite": "commerce", "results": {}}
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="mediacore-bench-commerce-") as tmp:
            directory = Path(tmp)
            with contextlib.ExitStack() as stack:
                url = stack.enter_context(_redis(directory)) if backend == "redis" else ""
                base = stack.enter_context(_server(directory, secret, url))
                result = asyncio.run(_load(base, secret, buyers, attempts))
        report["results"][backend] = result
        print(
            f"{backend:<7} {result['attempts']:>7} attempts, {buyers} buyers: {result['attempts_per_s']:>6}/s, "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, statuses {result['statuses']}, "
            f"remaining {result['remaining']}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")
    return report

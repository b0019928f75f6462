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
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.ingest import free_port
from benchmarks.servers import running_redis, serving
from mediacore.access.identity import Role, issue


@contextlib.contextmanager
def _server(directory: Path, secret: str, redis_url: str) -> Iterator[str]:
    port = free_port()
    config = directory / "mediacore.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nrtmp_port = {free_port()}\nrtsp_port = {free_port()}\n'
        f'http_port = {port}\ndata_dir = "{directory / "data"}"\n[admin]\nport = 0\n'
        f'[auth]\njwt_secret = "{secret}"\n[commerce]\nredis_url = "{redis_url}"\n'
    )
    base = f"http://127.0.0.1:{port}"
    with serving(config, directory / "server.log", f"{base}/api/products"):
        yield base


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
                url = stack.enter_context(running_redis(directory)) if backend == "redis" else ""
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

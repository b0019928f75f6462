"""Flash sales over HTTP against running servers never oversell: concurrent `POST /api/orders`
from many users (aiohttp, every request its own Idempotency-Key) for 100 units sell exactly
100, the sale's remaining units never go below 0 (polled during the run) and end at 0, and
nobody buys beyond the per-user limit — by the answers and by the store. For SQLite one
`mediacore serve` process, for Redis two sharing one real redis-server, the load split
between them. A naive read-then-write purchase route under the same HTTP load oversells,
so the test can see what it guards against.

Sizes (CI on 2 cores): 20 seeded runs of SMALL attempts and one run of FULL (10,000)
attempts per backend; MEDIACORE_FLASH_SALE_FULL=1 makes every seeded run FULL (the issue's
20 runs of 10,000 per backend, minutes long). The load runs in its own event loop without
asyncio debug mode."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from commerce_http import ADMIN, SECRET, token
from commerce_servers import serving

from benchmarks.servers import running_redis
from mediacore.app.config import Config
from mediacore.app.engine import Engine
from mediacore.plugins.api import PluginContext
from plugins.commerce.redis_store import RedisCommerceStore
from plugins.commerce.sqlite_store import SqliteCommerceStore

STOCK = 100
PER_USER_LIMIT = 2
FULL = 10_000
SMALL = FULL if os.environ.get("MEDIACORE_FLASH_SALE_FULL") == "1" else 300
SEEDS = range(20)
QUANTITIES = (1, 1, 1, 1, 2, 2, 3)
"""Mostly single units, some pairs, some triples (over the per-user limit by themselves)."""
CONNECTIONS = 128
"""Connections per server the buyers share (the origin allows 512 per address)."""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


def buyers(seed: int, attempts: int) -> list[tuple[str, int, str]]:
    """(user, quantity, idempotency key) per attempt: about four attempts per user."""
    rng = random.Random(seed)
    users = [f"viewer-{seed}-{n}" for n in range(max(1, attempts // 4))]
    return [
        (rng.choice(users), rng.choice(QUANTITIES), f"tap-{seed}-{i}-{uuid.uuid4().hex[:8]}") for i in range(attempts)
    ]


async def create_sale(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(f"{base}/api/products", headers=ADMIN, json={"title": "Lamp", "price": 4900}) as r:
        assert r.status == 201
        product = await r.json()
    now = time.time()
    body = {
        "product_id": product["id"],
        "stock": STOCK,
        "price": 2900,
        "starts_at": now - 60,
        "ends_at": now + 3600,
        "per_user_limit": PER_USER_LIMIT,
    }
    async with http.post(f"{base}/api/sales", headers=ADMIN, json=body) as r:
        assert r.status == 201
        return str((await r.json())["id"])


async def remaining(http: aiohttp.ClientSession, base: str, sale_id: str) -> int:
    async with http.get(f"{base}/api/sales/{sale_id}") as r:
        return int((await r.json())["remaining"])


async def run_sale(
    bases: list[str], seed: int, attempts: int, path: str = "/api/orders"
) -> tuple[str, list[tuple[str, int, int, dict[str, Any]]], int, float]:
    """One flash sale: every attempt started at once, spread over `bases`. Returns the sale,
    rows (user, quantity, status, answer), the lowest `remaining` seen while it ran and the
    seconds it took."""
    plan = buyers(seed, attempts)
    tokens = {user: token(user) for user in {u for u, _, _ in plan}}
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) for _ in bases]
    try:
        sale_id = await create_sale(sessions[0], bases[0])
        lowest = STOCK
        running = True

        async def watch() -> None:
            nonlocal lowest
            async with aiohttp.ClientSession() as http:
                while running:
                    lowest = min(lowest, await remaining(http, bases[-1], sale_id))
                    await asyncio.sleep(0.02)

        async def buy(n: int, user: str, quantity: int, key: str) -> tuple[str, int, int, dict[str, Any]]:
            headers = {"Authorization": f"Bearer {tokens[user]}", "Idempotency-Key": key}
            body = {"sale_id": sale_id, "quantity": quantity}
            async with sessions[n % len(bases)].post(f"{bases[n % len(bases)]}{path}", headers=headers, json=body) as r:
                return user, quantity, r.status, await r.json()

        watcher = asyncio.ensure_future(watch())
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(buy(n, u, q, k)) for n, (u, q, k) in enumerate(plan)]
        rows = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        running = False
        await watcher
        lowest = min(lowest, await remaining(sessions[0], bases[0], sale_id))
        return sale_id, rows, lowest, elapsed
    finally:
        for http in sessions:
            await http.close()


def check_sold(rows: list[tuple[str, int, int, dict[str, Any]]]) -> Counter[str]:
    """Exactly STOCK units sold, nobody over the limit, every refusal sold_out or limit;
    returns the units per user."""
    per_user: Counter[str] = Counter()
    for user, quantity, status, answer in rows:
        if status == 201:
            assert answer["user"] == user and answer["quantity"] == quantity
            per_user[user] += quantity
        else:
            assert status == 409 and answer["error"] in ("sold_out", "limit"), (status, answer)
    assert sum(per_user.values()) == STOCK
    assert max(per_user.values()) <= PER_USER_LIMIT
    return per_user


def sqlite_units(db: Path, sale_id: str) -> Counter[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT user, SUM(quantity) FROM orders WHERE sale_id = ? GROUP BY user", (sale_id,))
        return Counter(dict(rows.fetchall()))


async def redis_units(url: str, prefix: str, sale_id: str, users: set[str]) -> Counter[str]:
    store = RedisCommerceStore.from_url(url, prefix=prefix)
    try:
        units: Counter[str] = Counter()
        for user in users:
            for order in await store.orders_of(user):
                if order.sale_id == sale_id:
                    units[user] += order.quantity
        return units
    finally:
        await store.close()


def test_flash_sale_over_http_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "server" / "data" / "commerce" / "commerce.db"
    # synchronous=NORMAL: the fsync per order (FULL, the default) is about power loss, not
    # about overselling, and would make this test's 16,000 orders disk-bound.
    with serving(tmp_path / "server", {"sqlite_synchronous": "NORMAL"}) as base:
        for seed, attempts in [(seed, SMALL) for seed in SEEDS] + [(1000, FULL)]:
            sale_id, rows, lowest, elapsed = asyncio.run(run_sale([base], seed, attempts), debug=False)
            per_user = check_sold(rows)
            assert lowest >= 0
            assert asyncio.run(_remaining(base, sale_id), debug=False) == 0
            assert sqlite_units(db, sale_id) == per_user, "the store holds exactly the orders answered"
            if attempts == FULL:
                print(f"\nsqlite, 1 server: {FULL} attempts in {elapsed:.2f} s ({FULL / elapsed:.0f}/s)")


def test_flash_sale_over_http_redis_two_servers(tmp_path: Path, redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    settings = {"redis_url": redis_url, "key_prefix": prefix}
    with serving(tmp_path / "a", settings) as a, serving(tmp_path / "b", settings) as b:
        for seed, attempts in [(seed, SMALL) for seed in SEEDS] + [(2000, FULL)]:
            sale_id, rows, lowest, elapsed = asyncio.run(run_sale([a, b], seed, attempts), debug=False)
            per_user = check_sold(rows)
            assert lowest >= 0
            assert asyncio.run(_remaining(b, sale_id), debug=False) == 0
            stored = asyncio.run(redis_units(redis_url, prefix, sale_id, {u for u, *_ in rows}), debug=False)
            assert stored == per_user, "the store holds exactly the orders answered"
            if attempts == FULL:
                print(f"\nredis, 2 servers: {FULL} attempts in {elapsed:.2f} s ({FULL / elapsed:.0f}/s)")


async def _remaining(base: str, sale_id: str) -> int:
    async with aiohttp.ClientSession() as http:
        return await remaining(http, base, sale_id)


class NaiveShop:
    """What the atomic purchase prevents, as a route: read the sale's product stock, await
    the database, write it back minus the quantity. Sales are products here, stock = units."""

    name = "naive"

    async def start(self, context: PluginContext) -> None:
        self.context = context
        self.store = await SqliteCommerceStore.open(context.data_dir / "naive.db")
        context.add_route("POST", "/api/products", self.create_product)
        context.add_route("POST", "/api/sales", self.create_sale)
        context.add_route("GET", "/api/sales/{sale_id}", self.get_sale)
        context.add_route("POST", "/api/naive-orders", self.order)

    async def create_product(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": "x"}, status=201)

    async def create_sale(self, request: web.Request) -> web.StreamResponse:
        product = await self.store.create_product(
            title="Lamp", price=2900, currency="EUR", stock=(await request.json())["stock"], now=time.time()
        )
        return web.json_response({"id": product.id}, status=201)

    async def get_sale(self, request: web.Request) -> web.StreamResponse:
        product = await self.store.get_product(request.match_info["sale_id"])
        assert product is not None
        return web.json_response({"remaining": product.stock})

    async def order(self, request: web.Request) -> web.StreamResponse:
        who = self.context.identity(request)
        assert who is not None
        body = await request.json()
        product = await self.store.get_product(body["sale_id"])
        assert product is not None
        if product.stock < body["quantity"]:
            return web.json_response({"error": "sold_out"}, status=409)
        await asyncio.sleep(0)  # a handler awaits its database between the read and the write
        await self.store.set_stock(product.id, product.stock - body["quantity"])
        return web.json_response({"user": who.sub, "quantity": body["quantity"]}, status=201)

    async def stop(self) -> None:
        await self.store.close()


def test_a_naive_read_then_write_purchase_oversells_under_the_same_load(config: Config) -> None:
    config.auth.jwt_secret = SECRET

    async def run() -> int:
        engine = Engine(config)
        engine.plugins = [NaiveShop()]
        await engine.start()
        try:
            base = f"http://127.0.0.1:{engine.http_port}"
            _, rows, _, _ = await run_sale([base], 7, 1000, path="/api/naive-orders")
        finally:
            await engine.stop()
        return sum(q for _, q, status, _ in rows if status == 201)

    units = asyncio.run(run(), debug=False)
    assert units > STOCK, f"the naive purchase sold {units} units of {STOCK}: the load does not race"

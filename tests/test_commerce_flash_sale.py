"""Flash sales never oversell: thousands of concurrent purchase attempts (asyncio tasks; for
Redis also from two OS processes sharing one redis-server) for 100 units sell exactly 100,
stock ends at 0 and never below, and no user buys beyond the per-user limit. A naive
read-then-write purchase under the same load oversells, so the test can see what it guards
against.

Sizes: 20 seeded runs of SMALL attempts per backend (and for the two-process Redis case),
plus FULL_SEEDS runs of FULL (10,000) attempts per backend and for two processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from commerce_backends import BACKENDS, T0, Backend

from benchmarks.servers import running_redis
from plugins.commerce.flow import StoreBase
from plugins.commerce.model import Completed, Refusal

T = TypeVar("T")
log = logging.getLogger("test.flash_sale")

STOCK = 100
PER_USER_LIMIT = 2
SMALL = 1_000
FULL = 10_000
SEEDS = range(20)
FULL_SEEDS = (0, 1)
QUANTITIES = (1, 1, 1, 1, 2, 2, 3)
"""Mostly single units, some pairs, some triples (over the per-user limit of 2 by themselves)."""
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Backend(request.param, tmp_path, url)


def buyers(seed: int, attempts: int) -> list[tuple[str, int, str]]:
    """(user, quantity, idempotency key) per attempt: about four attempts per user, so many
    users try to go over the limit, and every attempt has its own key."""
    rng = random.Random(seed)
    users = [f"viewer-{seed}-{n}" for n in range(max(1, attempts // 4))]
    return [(rng.choice(users), rng.choice(QUANTITIES), f"tap-{seed}-{i}") for i in range(attempts)]


async def all_at_once(calls: list[Awaitable[T]]) -> list[T]:
    """Starts every call as its own task before any of them runs, then waits for all."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    return await asyncio.gather(*tasks)


async def new_sale(store: StoreBase, stock: int = STOCK) -> str:
    product = await store.create_product(title="Lamp", price=4900, currency="EUR", stock=0, now=T0)
    sale = await store.create_sale(
        product_id=product.id,
        stock=stock,
        price=2900,
        starts_at=T0 - 60,
        ends_at=T0 + 3600,
        per_user_limit=PER_USER_LIMIT,
        now=T0,
    )
    return sale.id


def check_sold(rows: list[tuple[str, int, int, str | None, str | None]]) -> int:
    """rows: (user, quantity, status, order_id, error). Asserts exactly STOCK units sold and
    nobody over the limit; returns the number of orders."""
    sold = [(user, q) for user, q, status, order_id, _ in rows if order_id is not None]
    assert all(status == 201 for _, _, status, order_id, _ in rows if order_id is not None)
    assert sum(q for _, q in sold) == STOCK
    per_user = Counter()
    for user, q in sold:
        per_user[user] += q
    assert max(per_user.values()) <= PER_USER_LIMIT
    refused = Counter(error for *_, order_id, error in rows if order_id is None)
    assert set(refused) <= {Refusal.SOLD_OUT.value, Refusal.LIMIT.value}, refused
    return len(sold)


async def flash_sale(store: StoreBase, seed: int, attempts: int) -> tuple[int, float]:
    sale_id = await new_sale(store)
    plan = buyers(seed, attempts)
    started = time.perf_counter()
    results = await all_at_once(
        [store.purchase(u, sale_id=sale_id, quantity=q, idempotency_key=k, now=T0) for u, q, k in plan]
    )
    elapsed = time.perf_counter() - started
    rows = []
    for (user, q, _), result in zip(plan, results):
        assert isinstance(result, Completed)
        rows.append((user, q, result.status, result.order_id, result.error.value if result.error else None))
    orders = check_sold(rows)
    sale = await store.get_sale(sale_id)
    assert sale is not None and sale.remaining == 0
    # The store agrees with the responses: the orders it lists per user, and one outbox entry per order.
    by_user: Counter[str] = Counter()
    for user in {u for u, _, _, order_id, _ in rows if order_id is not None}:
        for order in await store.orders_of(user):
            if order.sale_id == sale_id:
                by_user[user] += order.quantity
    assert sum(by_user.values()) == STOCK and max(by_user.values()) <= PER_USER_LIMIT
    outbox = await store.outbox_fetch()
    assert len([e for e in outbox if json.loads(e.payload)["sale_id"] == sale_id]) == orders
    await store.outbox_ack([e.id for e in outbox])
    return orders, elapsed


@pytest.mark.parametrize("seed", SEEDS)
async def test_flash_sale_sells_exactly_the_stock(backend: Backend, seed: int) -> None:
    store = await backend.open()
    try:
        await flash_sale(store, seed, SMALL)
    finally:
        await store.close()


@pytest.mark.parametrize("seed", FULL_SEEDS)
async def test_flash_sale_full_size(backend: Backend, seed: int) -> None:
    store = await backend.open()
    try:
        orders, elapsed = await flash_sale(store, 1000 + seed, FULL)
    finally:
        await store.close()
    print(f"\n{backend.kind} seed {seed}: {FULL} attempts in {elapsed:.2f} s, {orders} orders, {STOCK} units")


async def naive_purchase(store: StoreBase, product_id: str, quantity: int) -> bool:
    """What the atomic step prevents: read the stock, await (a handler would await its
    database here), write the stock back minus the quantity."""
    product = await store.get_product(product_id)
    assert product is not None
    if product.stock < quantity:
        return False
    await asyncio.sleep(0)
    await store.set_stock(product_id, product.stock - quantity)
    return True


@pytest.mark.parametrize("attempts", [SMALL, FULL])
async def test_a_naive_read_then_write_purchase_oversells(backend: Backend, attempts: int) -> None:
    store = await backend.open()
    try:
        product = await store.create_product(title="Lamp", price=4900, currency="EUR", stock=STOCK, now=T0)
        plan = buyers(7, attempts)
        sold = await all_at_once([naive_purchase(store, product.id, q) for _, q, _ in plan])
        units = sum(q for (_, q, _), ok in zip(plan, sold) if ok)
    finally:
        await store.close()
    assert units > STOCK, f"the naive purchase sold {units} units of {STOCK}: the load does not race"


def test_two_processes_sharing_one_redis_never_oversell(redis_url: str, tmp_path: Path) -> None:
    """Two OS processes, each with its own client, buy from the same sales at the same time:
    20 seeded rounds of SMALL attempts, then FULL_SEEDS rounds of FULL attempts."""
    backend = Backend("redis", tmp_path, redis_url)
    sizes = [(seed, SMALL) for seed in SEEDS] + [(2000 + seed, FULL) for seed in FULL_SEEDS]

    async def make_sales() -> list[str]:
        store = await backend.open()
        try:
            return [await new_sale(store) for _ in sizes]
        finally:
            await store.close()

    sale_ids = asyncio.run(make_sales())
    plans = [buyers(seed, attempts) for seed, attempts in sizes]
    # The buyers run without asyncio debug mode (which conftest turns on for this process):
    # it would slow them tenfold and is not what a server runs with.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    procs, outs, errs = [], [], []
    for part in range(2):
        plan = {
            "url": redis_url,
            "prefix": backend.prefix,
            "processes": 2,
            "now": T0,
            "rounds": [{"sale_id": s, "attempts": p[part::2]} for s, p in zip(sale_ids, plans)],
        }
        plan_path, out = tmp_path / f"plan{part}.json", tmp_path / f"out{part}.json"
        plan_path.write_text(json.dumps(plan))
        outs.append(out)
        errs.append(tmp_path / f"err{part}.txt")
        with errs[-1].open("wb") as err:
            command = [sys.executable, str(HERE / "commerce_buyers.py"), str(plan_path), str(out)]
            procs.append(subprocess.Popen(command, cwd=HERE, env=env, stderr=err))
    started = time.perf_counter()
    for proc, err_path in zip(procs, errs):
        assert proc.wait(timeout=600) == 0, err_path.read_text()[-3000:]
    elapsed = time.perf_counter() - started
    results = [json.loads(out.read_text()) for out in outs]

    async def remaining(sale_id: str) -> int:
        store = await backend.open()
        try:
            sale = await store.get_sale(sale_id)
            assert sale is not None
            return sale.remaining
        finally:
            await store.close()

    for n, ((seed, attempts), sale_id) in enumerate(zip(sizes, sale_ids)):
        rows = [tuple(row) for part in results for row in part[n]]
        assert len(rows) == attempts
        orders = check_sold(rows)
        assert asyncio.run(remaining(sale_id)) == 0
        if attempts == FULL:
            print(f"\nredis, 2 processes, seed {seed}: {FULL} attempts, {orders} orders")
    print(f"\nredis, 2 processes: {len(sizes)} rounds in {elapsed:.1f} s")

"""The order webhook: a real aiohttp receiver that is down (port closed) for the first
WEBHOOK_DOWN seconds while orders pile up, across a restart of the store (the SQLite file
reopened, a new Redis client) and of the deliverer; once it is up every order arrives, and
the receiver, which deduplicates by Idempotency-Key, processes each exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from commerce_backends import BACKENDS, T0, Backend
from conftest import free_port, until

from benchmarks.servers import running_redis
from plugins.commerce.flow import StoreBase
from plugins.commerce.model import Completed
from plugins.commerce.outbox import OutboxDeliverer, WebhookConfig, backoff_delay

WEBHOOK_DOWN = 10.0
"""Seconds the receiver is down, as in the issue."""
ORDERS_BEFORE, ORDERS_AFTER = 30, 30


def fast_config(port: int) -> WebhookConfig:
    """A retry schedule short enough for a test; the shape (doubling, capped) is the production one."""
    url = f"http://127.0.0.1:{port}/orders"
    return WebhookConfig(url=url, initial_backoff=0.05, max_backoff=1.0, poll_interval=0.1, request_timeout=2.0)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Backend(request.param, tmp_path, url)


class Receiver:
    """The shop backend: processes an order once per Idempotency-Key, acknowledges repeats."""

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        self.processed: Counter[str] = Counter()
        self.mismatched: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        body = json.loads(await request.read())
        if body.get("order_id") != key:
            self.mismatched.append(key)
        self.posts[key] += 1
        if key not in self.processed:
            self.processed[key] += 1
        return web.json_response({"ok": True})


async def place_orders(store: StoreBase, product_id: str, count: int, tag: str) -> list[str]:
    ids = []
    for n in range(count):
        result = await store.purchase(f"{tag}-{n}", product_id=product_id, quantity=1, idempotency_key="k", now=T0)
        assert isinstance(result, Completed) and result.order_id is not None
        ids.append(result.order_id)
    return ids


async def test_webhook_down_then_up_delivers_every_order_once_across_a_restart(backend: Backend) -> None:
    loop = asyncio.get_running_loop()
    port = free_port()
    config = fast_config(port)
    started = loop.time()

    store = await backend.open()
    product = await store.create_product(title="Scarf", price=1900, currency="EUR", stock=1000, now=T0)
    ids = await place_orders(store, product.id, ORDERS_BEFORE, "before")
    deliverer = OutboxDeliverer(store, config)
    deliverer.start()
    await until(lambda: deliverer.failed_attempts >= 2 * ORDERS_BEFORE, WEBHOOK_DOWN / 2, "retries")
    assert deliverer.delivered == 0
    # The server restarts while the receiver is still down.
    await deliverer.stop()
    await store.close()
    store = await backend.open()
    ids += await place_orders(store, product.id, ORDERS_AFTER, "after")
    assert len(await store.outbox_fetch()) == ORDERS_BEFORE + ORDERS_AFTER
    deliverer = OutboxDeliverer(store, config)
    deliverer.start()
    try:
        await asyncio.sleep(max(0.0, started + WEBHOOK_DOWN - loop.time()))
        assert deliverer.delivered == 0 and deliverer.failed_attempts > 0
        receiver = Receiver()
        app = web.Application()
        app.router.add_post("/orders", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await until(lambda: set(receiver.processed) == set(ids), 10, "every order delivered")
            await until(lambda: deliverer.delivered == len(ids), 5, "every entry acknowledged")
        finally:
            await runner.cleanup()
    finally:
        await deliverer.stop()
        remaining = await store.outbox_fetch()
        await store.close()
    assert remaining == []
    assert receiver.mismatched == []
    assert all(n == 1 for n in receiver.processed.values())
    assert sum(receiver.posts.values()) == len(ids)  # nothing was acknowledged twice either


async def test_a_receiver_error_is_retried_until_it_accepts(backend: Backend) -> None:
    port = free_port()
    answers = [500, 503, 200]
    seen: list[str] = []

    async def flaky(request: web.Request) -> web.Response:
        seen.append(request.headers["Idempotency-Key"])
        return web.Response(status=answers.pop(0) if answers else 200)

    app = web.Application()
    app.router.add_post("/orders", flaky)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    store = await backend.open()
    deliverer = OutboxDeliverer(store, fast_config(port))
    try:
        product = await store.create_product(title="Hat", price=900, currency="EUR", stock=5, now=T0)
        [order_id] = await place_orders(store, product.id, 1, "u")
        deliverer.start()
        await until(lambda: deliverer.delivered == 1, 10, "delivery after two errors")
        assert seen == [order_id] * 3
        assert await store.outbox_fetch() == []
    finally:
        await deliverer.stop()
        await store.close()
        await runner.cleanup()


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 1.0, 300.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(20, 1.0, 300.0) == 300.0
    assert backoff_delay(10_000, 1.0, 300.0) == 300.0

"""The order webhook run by the commerce plugin: orders taken over HTTP while the shop
backend is down (port closed) for WEBHOOK_DOWN seconds, across a restart of the engine;
once the backend is up every order arrives, each processed once by a receiver that
deduplicates by Idempotency-Key, and the outbox empties."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import aiohttp
from aiohttp import web
from commerce_http import ADMIN, SECRET, auth, call
from conftest import free_port, until

from mediacore.app.config import Config
from mediacore.app.engine import Engine
from plugins.commerce.plugin import CommercePlugin

WEBHOOK_DOWN = 10.0
"""Seconds the receiver is down, as in the issue."""
ORDERS_BEFORE, ORDERS_AFTER = 20, 20


async def place(engine: Engine, product_id: str, tag: str, count: int) -> list[str]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
        ids = []
        for n in range(count):
            headers = auth(f"{tag}-{n}") | {"Idempotency-Key": str(uuid.uuid4())}
            status, order = await call(http, "POST", "/api/orders", headers, json={"product_id": product_id})
            assert status == 201, order
            ids.append(order["order_id"])
        return ids


async def started(config: Config) -> tuple[Engine, CommercePlugin]:
    engine = Engine(config)
    plugin = CommercePlugin()
    engine.plugins = [plugin]
    await engine.start()
    return engine, plugin


async def test_orders_reach_the_webhook_after_an_outage_and_a_restart(config: Config) -> None:
    loop = asyncio.get_running_loop()
    port = free_port()
    config.auth.jwt_secret = SECRET
    config.plugin_settings["commerce"] = {
        "order_webhook": f"http://127.0.0.1:{port}/orders",
        "webhook_initial_backoff": 0.05,
        "webhook_max_backoff": 1.0,
        "webhook_timeout": 2.0,
    }
    t0 = loop.time()
    engine, plugin = await started(config)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
            status, product = await call(
                http, "POST", "/api/products", ADMIN, json={"title": "Scarf", "price": 1900, "stock": 1000}
            )
            assert status == 201
        ids = await place(engine, product["id"], "before", ORDERS_BEFORE)
        assert plugin.deliverer is not None
        deliverer = plugin.deliverer
        await until(lambda: deliverer.failed_attempts >= ORDERS_BEFORE, WEBHOOK_DOWN / 2, "failed attempts")
    finally:
        await engine.stop()
    # The engine restarts while the receiver is still down; more orders come in.
    engine, plugin = await started(config)
    try:
        ids += await place(engine, product["id"], "after", ORDERS_AFTER)
        await asyncio.sleep(max(0.0, t0 + WEBHOOK_DOWN - loop.time()))
        assert plugin.deliverer is not None
        deliverer = plugin.deliverer
        assert deliverer.delivered == 0
        posts: Counter[str] = Counter()
        processed: dict[str, dict[str, object]] = {}

        async def receive(request: web.Request) -> web.Response:
            key = request.headers["Idempotency-Key"]
            posts[key] += 1
            body = json.loads(await request.read())
            assert body["order_id"] == key
            processed.setdefault(key, body)
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/orders", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await until(lambda: set(processed) == set(ids), 10, "every order delivered")
            await until(lambda: deliverer.delivered == len(ids), 5, "every entry acknowledged")
        finally:
            await runner.cleanup()
        assert plugin.store is not None and await plugin.store.outbox_fetch() == []
        assert all(n == 1 for n in posts.values()), "nothing acknowledged was sent again"
        assert {o["user"] for o in processed.values()} == {f"before-{n}" for n in range(ORDERS_BEFORE)} | {
            f"after-{n}" for n in range(ORDERS_AFTER)
        }
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{engine.admin_port}/metrics") as r:
            assert f"mediacore_commerce_webhook_delivered {float(len(ids))}" in await r.text()
    finally:
        await engine.stop()

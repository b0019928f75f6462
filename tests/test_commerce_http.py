"""The commerce plugin over HTTP against a running engine: catalogue, sales, coupons and
orders with their status codes; who may call what (JWT roles, expired and forged tokens);
idempotency (50 concurrent requests with one key → one order, identical answers; 400 / 409 /
422); 1,000 concurrent redemptions of a single-use coupon → exactly one; funnel events and
stats; bounded Prometheus counters; bad input answered with a clear 4xx and nothing written;
the [commerce] settings and their example."""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
from commerce_http import ADMIN, HOST, SECRET, auth, call, new_sale, token
from conftest import ROOT

from mediacore.access.identity import Role, issue
from mediacore.app.config import Config, load_config
from mediacore.app.engine import Engine
from mediacore.plugins.api import PluginError
from plugins.commerce.plugin import CommercePlugin
from plugins.commerce.settings import CommerceSettings


@pytest.fixture
async def shop(config: Config) -> AsyncIterator[tuple[Engine, aiohttp.ClientSession]]:
    config.auth.jwt_secret = SECRET
    engine = Engine(config)
    engine.plugins = [CommercePlugin()]
    await engine.start()
    connector = aiohttp.TCPConnector(limit=200)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}", connector=connector) as http:
            yield engine, http
    finally:
        await engine.stop()


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def test_catalogue_sales_and_coupons(shop):
    engine, http = shop
    status, product = await call(
        http, "POST", "/api/products", ADMIN, json={"id": "sku-1", "title": "Mug", "price": 1499, "stock": 3}
    )
    assert status == 201 and product["id"] == "sku-1" and product["currency"] == "EUR"
    assert (await call(http, "POST", "/api/products", ADMIN, json={"id": "sku-1", "title": "x", "price": 1}))[0] == 409
    assert (await call(http, "GET", "/api/products/sku-1"))[1]["stock"] == 3
    assert (await call(http, "GET", "/api/products/nope"))[0] == 404
    status, listed = await call(http, "GET", "/api/products")
    assert status == 200 and [p["id"] for p in listed["products"]] == ["sku-1"]
    status, updated = await call(http, "PUT", "/api/products/sku-1/stock", ADMIN, json={"stock": 10})
    assert status == 200 and updated["stock"] == 10
    assert (await call(http, "PUT", "/api/products/nope/stock", ADMIN, json={"stock": 1}))[0] == 404

    _, sale_id = await new_sale(http, stock=5)
    status, sale = await call(http, "GET", f"/api/sales/{sale_id}")
    assert status == 200 and sale["remaining"] == 5 and sale["state"] == "live"
    assert (await call(http, "GET", "/api/sales/nope"))[0] == 404

    coupon = {"code": "TEN", "kind": "percent", "value": 10, "expires_at": time.time() + 600, "max_uses": 5}
    status, created = await call(http, "POST", "/api/coupons", ADMIN, json=coupon)
    assert status == 201 and created["uses"] == 0
    assert (await call(http, "POST", "/api/coupons", ADMIN, json=coupon))[0] == 409
    assert (await call(http, "GET", "/api/coupons/TEN"))[1]["max_uses"] == 5
    assert (await call(http, "GET", "/api/coupons/NOPE"))[0] == 404

    # An order outside a sale, with the coupon; then its replay, and the order itself.
    headers = auth("ann") | key()
    body = {"product_id": "sku-1", "quantity": 2, "coupon": "TEN"}
    status, order = await call(http, "POST", "/api/orders", headers, json=body)
    assert status == 201 and order["total"] == 2 * 1499 - 2 * 1499 // 10 and order["user"] == "ann"
    assert (await call(http, "GET", f"/api/orders/{order['order_id']}", auth("ann")))[1] == order
    assert (await call(http, "GET", f"/api/orders/{order['order_id']}", auth("bob")))[0] == 404
    assert (await call(http, "GET", "/api/products/sku-1"))[1]["stock"] == 8
    assert (await call(http, "POST", "/api/orders", auth("ann") | key(), json=body))[1] == {"error": "coupon_used"}


async def test_roles_and_tokens(shop):
    engine, http = shop
    body = {"title": "Lamp", "price": 100}
    assert (await call(http, "POST", "/api/products", json=body))[0] == 401
    assert (await call(http, "POST", "/api/products", auth("v"), json=body))[0] == 403
    assert (await call(http, "POST", "/api/products", HOST, json=body))[0] == 403
    now = time.time()
    expired = issue(SECRET.encode(), "admin", Role.ADMIN, 60, now - 3600)
    forged = issue(b"not-the-shop-secret-but-32-bytes-long!!", "admin", Role.ADMIN, 60, now)
    for bad in (expired, forged, "not.a.jwt"):
        status, answer = await call(http, "POST", "/api/products", {"Authorization": f"Bearer {bad}"}, json=body)
        assert status == 401 and answer["error"] == "unauthorized", answer
    _, sale_id = await new_sale(http)
    order = {"sale_id": sale_id, "quantity": 1}
    assert (await call(http, "POST", "/api/orders", key(), json=order))[0] == 401
    assert (await call(http, "POST", "/api/orders", {"Authorization": f"Bearer {expired}"} | key(), json=order))[
        0
    ] == 401
    assert (await call(http, "POST", "/api/sales", HOST, json={}))[0] == 403
    assert (await call(http, "POST", "/api/coupons", auth("v"), json={}))[0] == 403
    products = (await call(http, "GET", "/api/products"))[1]["products"]
    assert [p["title"] for p in products] == ["Lamp"], "only new_sale's product was written"
    assert (await call(http, "GET", f"/api/sales/{sale_id}"))[1]["remaining"] == 100


async def test_orders_status_codes_and_bad_input(shop):
    engine, http = shop
    product_id, sale_id = await new_sale(http, stock=3, per_user_limit=2)
    ann = auth("ann")
    # No key → 400; bad keys, bodies and quantities → 400/404/413; nothing written.
    assert (await call(http, "POST", "/api/orders", ann, json={"sale_id": sale_id}))[1]["error"] == (
        "idempotency_key_required"
    )
    bad_bodies = [
        {"sale_id": sale_id, "quantity": -1},
        {"sale_id": sale_id, "quantity": 0},
        {"sale_id": sale_id, "quantity": 10**30},
        {"sale_id": sale_id, "quantity": 1.5},
        {"sale_id": sale_id, "quantity": "1"},
        {"sale_id": sale_id, "product_id": product_id},
        {},
        {"sale_id": sale_id, "price": 1},
        {"sale_id": "../etc", "quantity": 1},
        {"sale_id": sale_id, "coupon": "x" * 500},
    ]
    for body in bad_bodies:
        status, answer = await call(http, "POST", "/api/orders", ann | key(), json=body)
        assert status == 400 and answer["error"] == "bad_request" and answer["detail"], (body, answer)
    for raw in (b"{", b"[1]", b"\xff\xfe", b"null"):
        status, answer = await call(http, "POST", "/api/orders", ann | key(), data=raw)
        assert status == 400, raw
    assert (await call(http, "POST", "/api/orders", ann | {"Idempotency-Key": "x" * 300}, json={"sale_id": sale_id}))[
        0
    ] == 400
    assert (await call(http, "POST", "/api/orders", ann | key(), json={"sale_id": "nope"}))[1]["error"] == (
        "unknown_sale"
    )
    assert (await call(http, "POST", "/api/orders", ann | key(), json={"product_id": "nope"}))[0] == 404
    # 1 MB: the origin refuses bodies over 64 KiB with 413 before the route reads them.
    big = json.dumps({"sale_id": sale_id, "pad": "x" * 1_000_000}).encode()
    for path in ("/api/orders", "/api/products", "/api/events", "/api/streams/x/cards"):
        assert (await call(http, "POST", path, ADMIN | key(), data=big))[0] == 413, path
    status, answer = await call(http, "POST", "/api/events", ann, data=json.dumps({"type": "x" * 5000}))
    assert status == 413 and answer["error"] == "too_large"
    status, sale = await call(http, "GET", f"/api/sales/{sale_id}")
    assert sale["remaining"] == 3, "no bad request bought anything"

    # The limit, then sold out; the key of a refusal replays the refusal.
    k = key()
    status, first = await call(http, "POST", "/api/orders", ann | k, json={"sale_id": sale_id, "quantity": 2})
    assert status == 201 and first["quantity"] == 2 and first["total"] == 5800
    status, answer = await call(http, "POST", "/api/orders", ann | key(), json={"sale_id": sale_id, "quantity": 1})
    assert (status, answer) == (409, {"error": "limit"})
    assert (await call(http, "POST", "/api/orders", auth("bob") | key(), json={"sale_id": sale_id}))[0] == 201
    refused = key()
    assert (await call(http, "POST", "/api/orders", auth("cy") | refused, json={"sale_id": sale_id}))[1] == {
        "error": "sold_out"
    }
    async with http.post("/api/orders", headers=auth("cy") | refused, json={"sale_id": sale_id}) as r:
        assert r.status == 409 and await r.read() == b'{"error":"sold_out"}'
    # The key reused with another body → 422; the same body → the stored answer byte for byte.
    status, answer = await call(http, "POST", "/api/orders", ann | k, json={"sale_id": sale_id, "quantity": 1})
    assert (status, answer["error"]) == (422, "key_reused")
    async with http.post("/api/orders", headers=ann | k, json={"quantity": 2, "sale_id": sale_id}) as r:
        assert r.status == 201 and await r.read() == json.dumps(first, separators=(",", ":"), sort_keys=True).encode()
        assert r.headers["Idempotent-Replayed"] == "true"
    assert (await call(http, "GET", f"/api/sales/{sale_id}"))[1]["remaining"] == 0

    # Windows: a sale not yet started and one that ended.
    now = time.time()
    for starts, ends, reason in ((now + 600, now + 1200, "not_started"), (now - 1200, now - 600, "ended")):
        body = {"product_id": product_id, "stock": 5, "price": 1, "per_user_limit": 1}
        status, sale = await call(http, "POST", "/api/sales", ADMIN, json=body | {"starts_at": starts, "ends_at": ends})
        assert status == 201
        assert (await call(http, "POST", "/api/orders", ann | key(), json={"sale_id": sale["id"]}))[1] == {
            "error": reason
        }
    for body in (
        {"product_id": "nope", "stock": 5, "price": 1, "per_user_limit": 1, "ends_at": now + 60},
        {"product_id": product_id, "stock": -5, "price": 1, "per_user_limit": 1, "ends_at": now + 60},
        {"product_id": product_id, "stock": 5, "price": 1, "per_user_limit": 1, "ends_at": now - 60},
    ):
        assert (await call(http, "POST", "/api/sales", ADMIN, json=body))[0] in (400, 404), body


async def test_one_key_fifty_concurrent_requests_make_one_order(shop):
    engine, http = shop
    _, sale_id = await new_sale(http, stock=100, per_user_limit=5)
    headers = auth("ann") | key()

    async def buy() -> tuple[int, bytes, str | None]:
        async with http.post("/api/orders", headers=headers, json={"sale_id": sale_id, "quantity": 1}) as r:
            return r.status, await r.read(), r.headers.get("Retry-After")

    answers = await asyncio.gather(*(buy() for _ in range(50)))
    done = [(s, b) for s, b, _ in answers if s == 201]
    in_flight = [(s, b, ra) for s, b, ra in answers if s == 409]
    assert len(done) + len(in_flight) == 50 and done, answers[:3]
    assert len({b for _, b in done}) == 1, "every completed answer is the same bytes"
    assert all(json.loads(b) == {"error": "in_progress"} or b"in_progress" in b for _, b, _ in in_flight)
    assert all(ra == "1" for _, _, ra in in_flight)
    # Retrying after completion gives the stored answer; one order was made.
    status, body, _ = await buy()
    assert status == 201 and body == done[0][1]
    assert (await call(http, "GET", f"/api/sales/{sale_id}"))[1]["remaining"] == 99


async def test_a_single_use_coupon_is_redeemed_once_under_1000_concurrent_orders(shop):
    engine, http = shop
    status, product = await call(
        http, "POST", "/api/products", ADMIN, json={"title": "Tee", "price": 2000, "stock": 5000}
    )
    assert status == 201
    coupon = {"code": "ONCE", "kind": "amount", "value": 500, "expires_at": time.time() + 600}
    assert (await call(http, "POST", "/api/coupons", ADMIN, json=coupon))[0] == 201
    users = [f"u{n}" for n in range(1000)]
    tokens = {u: token(u) for u in users}

    async def order(user: str) -> tuple[int, dict[str, object]]:
        headers = {"Authorization": f"Bearer {tokens[user]}"} | key()
        body = {"product_id": product["id"], "coupon": "ONCE"}
        async with http.post("/api/orders", headers=headers, json=body) as r:
            return r.status, await r.json()

    answers = await asyncio.gather(*(order(u) for u in users))
    won = [a for s, a in answers if s == 201]
    assert len(won) == 1 and won[0]["total"] == 1500 and won[0]["discount"] == 500
    assert sorted({a["error"] for s, a in answers if s == 409}) == ["coupon_used"]
    assert (await call(http, "GET", "/api/coupons/ONCE"))[1]["uses"] == 1
    assert (await call(http, "GET", f"/api/products/{product['id']}"))[1]["stock"] == 4999


async def test_events_stats_and_metrics(shop):
    engine, http = shop
    product_id, sale_id = await new_sale(http)
    event = {"type": "impression", "stream": "shop", "product_id": product_id}
    assert (await call(http, "POST", "/api/events", auth("v"), json=event))[0] == 404, "no such stream yet"
    assert (await call(http, "GET", "/api/streams/shop/stats", HOST))[0] == 404
    publisher = engine.hub.publish("shop")  # a live stream without media yet
    try:
        assert (await call(http, "POST", "/api/events", json=event))[0] == 401
        for kind, times in (("impression", 10), ("click", 4), ("add_to_cart", 2)):
            for n in range(times):
                status, _ = await call(http, "POST", "/api/events", auth(f"v{n}"), json=event | {"type": kind})
                assert status == 204
        for bad in (
            event | {"type": "purchase"},
            event | {"product_id": "nope"},
            event | {"stream": "other"},
            event | {"extra": 1},
            {"type": "click"},
        ):
            assert 400 <= (await call(http, "POST", "/api/events", auth("v"), json=bad))[0] < 500, bad
        # Two orders: one naming the stream, one counted for it as the product's last card's stream
        # is unknown (no card pinned): only the first counts.
        body = {"sale_id": sale_id, "stream": "shop"}
        assert (await call(http, "POST", "/api/orders", auth("o1") | key(), json=body))[0] == 201
        assert (await call(http, "POST", "/api/orders", auth("o2") | key(), json={"sale_id": sale_id}))[0] == 201
        assert (await call(http, "POST", "/api/orders", auth("o3") | key(), json=body | {"stream": "nope"}))[0] == 400
        # A card needs media: the stream has none yet.
        status, answer = await call(http, "POST", "/api/streams/shop/cards", HOST, json={"product_id": product_id})
        assert status == 422 and answer["error"] == "card_refused"
        assert (await call(http, "GET", "/api/streams/shop/stats", auth("v")))[0] == 403
        status, stats = await call(http, "GET", "/api/streams/shop/stats", HOST)
        assert status == 200
        [row] = stats["products"]
        assert (row["impressions"], row["clicks"], row["add_to_cart"], row["orders"]) == (10, 4, 2, 1)
        assert row["ctr"] == 0.4 and row["conversion"] == 0.25
        assert row["per_minute"] and sum(m["impressions"] for m in row["per_minute"]) == 10
    finally:
        publisher.close()
    async with aiohttp.ClientSession() as admin:
        async with admin.get(f"http://127.0.0.1:{engine.admin_port}/metrics") as r:
            text = await r.text()
    assert 'mediacore_commerce_events_total{type="impression"} 10.0' in text
    assert 'mediacore_commerce_purchases_total{outcome="created"} 2.0' in text
    assert 'mediacore_commerce_purchases_total{outcome="invalid"} 1.0' in text
    assert "nope" not in text, "request values never become label values"


def test_settings_are_checked():
    assert CommerceSettings.parse({}) == CommerceSettings()
    for bad, message in (
        ({"redis_url": "http://x"}, "redis_url"),
        ({"order_webhook": "ftp://x"}, "order_webhook"),
        ({"order_webhook": 5}, "order_webhook must be str"),
        ({"webhook_initial_backoff": -1}, "webhook_initial_backoff"),
        ({"webhook_initial_backoff": 10.0, "webhook_max_backoff": 5.0}, "webhook_max_backoff"),
        ({"key_prefix": "has space"}, "key_prefix"),
        ({"demo": "yes"}, "demo must be bool"),
        ({"stats_minutes": 0}, "stats_minutes"),
        ({"currency": "euro"}, "currency"),
        ({"sqlite_synchronous": "OFF"}, "sqlite_synchronous"),
        ({"nope": 1}, "unknown setting commerce.nope"),
    ):
        with pytest.raises(PluginError, match=message):
            CommerceSettings.parse(bad)


async def test_a_bad_setting_refuses_the_start(config):
    config.plugin_settings["commerce"] = {"redis_url": "redis://127.0.0.1:1/0"}
    engine = Engine(config)
    with pytest.raises(PluginError, match="Redis"):
        await engine.start()
    await engine.stop()


def test_the_example_commerce_section_lists_every_setting_and_loads():
    path = ROOT / "mediacore.example.toml"
    listed = tomllib.loads(path.read_text())["commerce"]
    assert set(listed) == set(CommerceSettings.__dataclass_fields__)
    assert CommerceSettings.parse(listed) == CommerceSettings(), "the example shows the defaults"
    config = load_config(path)
    assert "commerce" in config.plugins.enabled
    assert CommerceSettings.parse(config.plugin_settings["commerce"]) == CommerceSettings()


def test_commerce_runs_by_default():
    assert load_config(None).plugins.enabled == ["accounts", "commerce", "chat"]


def test_the_demo_command_turns_the_demo_shop_on():
    from mediacore.app.cli import enable_demo_shop

    config = load_config(None, {"demo": {"stream": "studio"}})
    enable_demo_shop(config)
    assert CommerceSettings.parse(config.plugin_settings["commerce"]).demo_stream == "studio"
    # The demo listens on every address by default: its watch page still gets guest tokens.
    assert config.plugin_settings["accounts"]["guests"] is True
    assert config.plugin_settings["chat"]["guests_may_write"] is True
    off = load_config(None, {"plugins": {"enabled": []}})
    enable_demo_shop(off)
    assert "commerce" not in off.plugin_settings

"""The commerce store, both backends under the same tests: catalogue, sale windows,
idempotency (replays, reuse, in flight, expiry on an injected clock), coupons (exactly once
under concurrency, per user, expiry, not consumed by a failed order), and bad input
refused with nothing written. Pure rules are tested without a store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from commerce_backends import BACKENDS, T0, Backend

from benchmarks.servers import running_redis
from plugins.commerce import limits, rules
from plugins.commerce.flow import StoreBase
from plugins.commerce.model import (
    AlreadyExists,
    Claimed,
    Completed,
    Coupon,
    CouponKind,
    InProgress,
    InvalidRequest,
    KeyReused,
    Refusal,
    UnknownProduct,
    UnknownSale,
)
from plugins.commerce.sqlite_store import SqliteCommerceStore


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBase]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    opened = await Backend(request.param, tmp_path, url).open()
    try:
        yield opened
    finally:
        await opened.close()


async def product_and_sale(store: StoreBase, stock: int = 10, per_user_limit: int = 2) -> tuple[str, str]:
    product = await store.create_product(title="Kettle", price=3000, currency="EUR", stock=50, now=T0)
    sale = await store.create_sale(
        product_id=product.id,
        stock=stock,
        price=2000,
        starts_at=T0 - 10,
        ends_at=T0 + 600,
        per_user_limit=per_user_limit,
        now=T0,
    )
    return product.id, sale.id


async def all_at_once(calls: list[Any]) -> list[Any]:
    tasks = [asyncio.ensure_future(c) for c in calls]
    return await asyncio.gather(*tasks)


# Catalogue and sales ---------------------------------------------------------------------


async def test_catalogue_round_trip(store: StoreBase) -> None:
    a = await store.create_product(title="Mug", price=1200, currency="EUR", stock=3, now=T0, image="https://x/m.jpg")
    b = await store.create_product(title="Cup", price=800, currency="EUR", stock=0, now=T0 + 1, product_id="SKU-2")
    assert await store.get_product(a.id) == a
    assert await store.get_product("SKU-2") == b
    assert await store.list_products() == [a, b]
    assert await store.list_products(offset=1, limit=1) == [b]
    assert (await store.set_stock("SKU-2", 7)).stock == 7
    assert await store.get_product("nope") is None
    with pytest.raises(AlreadyExists):
        await store.create_product(title="Dup", price=1, currency="EUR", stock=0, now=T0, product_id="SKU-2")
    with pytest.raises(UnknownProduct):
        await store.set_stock("nope", 1)
    with pytest.raises(UnknownProduct):
        await store.create_sale(
            product_id="nope", stock=1, price=1, starts_at=T0, ends_at=T0 + 1, per_user_limit=1, now=T0
        )


async def test_sale_window_and_product_purchase(store: StoreBase) -> None:
    product_id, sale_id = await product_and_sale(store)
    early = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="a", now=T0 - 11)
    late = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="b", now=T0 + 600)
    assert isinstance(early, Completed) and early.error is Refusal.NOT_STARTED and early.status == 409
    assert early.body == b'{"error":"not_started"}'
    assert isinstance(late, Completed) and late.error is Refusal.ENDED
    sale = await store.get_sale(sale_id)
    assert sale is not None and sale.remaining == 10
    bought = await store.purchase("u", product_id=product_id, quantity=3, idempotency_key="c", now=T0)
    assert isinstance(bought, Completed) and bought.status == 201
    assert json.loads(bought.body)["total"] == 9000
    product = await store.get_product(product_id)
    assert product is not None and product.stock == 47
    assert [o.id for o in await store.orders_of("u")] == [bought.order_id]
    assert await store.get_order(bought.order_id or "") == (await store.orders_of("u"))[0]


async def test_per_user_limit_counts_units_over_orders(store: StoreBase) -> None:
    _, sale_id = await product_and_sale(store, per_user_limit=3)
    first = await store.purchase("u", sale_id=sale_id, quantity=2, idempotency_key="1", now=T0)
    second = await store.purchase("u", sale_id=sale_id, quantity=2, idempotency_key="2", now=T0)
    third = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="3", now=T0)
    assert isinstance(first, Completed) and first.status == 201
    assert isinstance(second, Completed) and second.error is Refusal.LIMIT
    assert isinstance(third, Completed) and third.status == 201
    sale = await store.get_sale(sale_id)
    assert sale is not None and sale.remaining == 7


# Idempotency -----------------------------------------------------------------------------


async def test_fifty_concurrent_calls_with_one_key_make_one_order(store: StoreBase) -> None:
    _, sale_id = await product_and_sale(store)
    results = await all_at_once(
        [store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="tap-1", now=T0) for _ in range(50)]
    )
    created = [r for r in results if isinstance(r, Completed) and r.order_id is not None]
    assert len(created) == 1
    assert all(isinstance(r, Completed | InProgress) for r in results)
    assert {r.body for r in results if isinstance(r, Completed)} == {created[0].body}
    assert all(r.retry_after == limits.IN_PROGRESS_RETRY_AFTER for r in results if isinstance(r, InProgress))
    # After completion every retry gets the stored response byte for byte.
    retries = await all_at_once(
        [store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="tap-1", now=T0 + 5) for _ in range(50)]
    )
    assert all(isinstance(r, Completed) and r.replayed and r.body == created[0].body for r in retries)
    assert all(r.status == 201 for r in retries)
    sale = await store.get_sale(sale_id)
    assert sale is not None and sale.remaining == 9
    assert len(await store.outbox_fetch()) == 1
    assert len(await store.orders_of("u")) == 1


async def test_a_key_reused_with_another_request_is_refused(store: StoreBase) -> None:
    _, sale_id = await product_and_sale(store)
    first = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0)
    assert isinstance(first, Completed) and first.status == 201
    assert isinstance(await store.purchase("u", sale_id=sale_id, quantity=2, idempotency_key="k", now=T0), KeyReused)
    assert isinstance(
        await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0, coupon="X"), KeyReused
    )
    # Keys are per user: another viewer's "k" is another request.
    other = await store.purchase("v", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0)
    assert isinstance(other, Completed) and other.status == 201 and other.order_id != first.order_id


async def test_a_refusal_is_stored_and_replayed_too(store: StoreBase) -> None:
    product = await store.create_product(title="Rare", price=100, currency="EUR", stock=0, now=T0)
    refused = await store.purchase("u", product_id=product.id, quantity=1, idempotency_key="k", now=T0)
    assert isinstance(refused, Completed) and refused.error is Refusal.SOLD_OUT
    await store.set_stock(product.id, 5)
    again = await store.purchase("u", product_id=product.id, quantity=1, idempotency_key="k", now=T0 + 1)
    assert isinstance(again, Completed) and again.replayed
    assert (again.status, again.body) == (409, b'{"error":"sold_out"}')


async def test_in_flight_key_then_lease_expiry(store: StoreBase) -> None:
    """A claim whose request never completes (a crashed node) answers in_progress until its
    lease ends; then a retry claims the key and buys."""
    _, sale_id = await product_and_sale(store)
    fingerprint = rules.request_fingerprint(sale_id=sale_id, product_id=None, quantity=1, coupon=None)
    claim = await store.claim_key("u", "k", fingerprint, T0)
    assert isinstance(claim, Claimed)
    busy = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0 + 1)
    assert busy == InProgress(limits.IN_PROGRESS_RETRY_AFTER)
    record = await store.idempotency_record("u", "k", T0 + 1)
    assert record is not None and record.state == "in_progress"
    after = T0 + limits.IDEMPOTENCY_LEASE + 1
    done = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=after)
    assert isinstance(done, Completed) and done.status == 201
    # The crashed request's claim is lost: it can no longer store a response.
    assert not await store.complete_key("u", "k", claim.token, 201, b"{}", after)


async def test_a_failed_request_releases_its_claim(store: StoreBase, monkeypatch: pytest.MonkeyPatch) -> None:
    _, sale_id = await product_and_sale(store)

    async def broken(*args: object) -> None:
        raise ConnectionError("backend went away")

    monkeypatch.setattr(store, "_commit_order", broken)
    with pytest.raises(ConnectionError):
        await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0)
    assert await store.idempotency_record("u", "k", T0) is None
    monkeypatch.undo()
    retry = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0)
    assert isinstance(retry, Completed) and retry.status == 201


async def test_keys_are_kept_for_the_retention_then_expire(store: StoreBase) -> None:
    _, sale_id = await product_and_sale(store)
    first = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0)
    assert isinstance(first, Completed) and first.order_id is not None
    assert limits.IDEMPOTENCY_RETENTION >= 24 * 3600
    last_day = T0 + limits.IDEMPOTENCY_RETENTION - 1
    replay = await store.purchase("u", sale_id=sale_id, quantity=1, idempotency_key="k", now=T0 + 3600)
    assert isinstance(replay, Completed) and replay.replayed and replay.body == first.body
    assert await store.idempotency_record("u", "k", last_day) is not None
    expired = T0 + limits.IDEMPOTENCY_RETENTION + 1
    assert await store.idempotency_record("u", "k", expired) is None
    # SQLite deletes expired rows when asked; Redis records carry a TTL and go by themselves.
    assert await store.purge_expired(expired) == (1 if isinstance(store, SqliteCommerceStore) else 0)


# Coupons ---------------------------------------------------------------------------------


async def coupon(store: StoreBase, code: str = "SAVE10", **kw: Any) -> Coupon:
    args: dict[str, Any] = {"kind": CouponKind.PERCENT, "value": 10, "expires_at": T0 + 3600, "now": T0}
    return await store.create_coupon(code=code, **(args | kw))


async def test_a_single_use_code_is_redeemed_exactly_once_under_1000_concurrent_orders(store: StoreBase) -> None:
    product = await store.create_product(title="Bag", price=5000, currency="EUR", stock=5000, now=T0)
    await coupon(store, "ONLYONE", kind=CouponKind.AMOUNT, value=1500)
    results = await all_at_once(
        [
            store.purchase(f"v{i}", product_id=product.id, quantity=1, coupon="ONLYONE", idempotency_key="k", now=T0)
            for i in range(1000)
        ]
    )
    winners = [r for r in results if r.order_id is not None]
    assert len(winners) == 1 and json.loads(winners[0].body)["total"] == 3500
    assert all(r.error is Refusal.COUPON_USED for r in results if r.order_id is None)
    found = await store.get_coupon("ONLYONE")
    assert found is not None and found.uses == 1
    left = await store.get_product(product.id)
    assert left is not None and left.stock == 4999


async def test_coupon_once_per_user_expiry_and_unknown_code(store: StoreBase) -> None:
    product_id, _ = await product_and_sale(store)
    await coupon(store, "MULTI", max_uses=10)
    await coupon(store, "ANYTIMES", max_uses=10, once_per_user=False)

    async def buy(user: str, code: str, key: str, now: float = T0) -> Completed:
        result = await store.purchase(
            user, product_id=product_id, quantity=1, coupon=code, idempotency_key=key, now=now
        )
        assert isinstance(result, Completed)
        return result

    assert (await buy("u", "MULTI", "1")).status == 201
    assert (await buy("u", "MULTI", "2")).error is Refusal.COUPON_USED
    assert (await buy("v", "MULTI", "1")).status == 201
    assert (await buy("u", "ANYTIMES", "3")).status == 201
    assert (await buy("u", "ANYTIMES", "4")).status == 201
    assert (await buy("w", "MULTI", "1", now=T0 + 3600)).error is Refusal.COUPON_EXPIRED
    assert (await buy("w", "NOSUCHCODE", "2")).error is Refusal.COUPON_INVALID
    multi = await store.get_coupon("MULTI")
    assert multi is not None and multi.uses == 2


async def test_a_failed_order_does_not_consume_the_coupon(store: StoreBase) -> None:
    _, sale_id = await product_and_sale(store, stock=1, per_user_limit=1)
    await coupon(store, "ONCE")
    too_many = await store.purchase("u", sale_id=sale_id, quantity=2, coupon="ONCE", idempotency_key="1", now=T0)
    assert isinstance(too_many, Completed) and too_many.error is Refusal.SOLD_OUT
    taken = await store.purchase("v", sale_id=sale_id, quantity=1, idempotency_key="2", now=T0)
    assert isinstance(taken, Completed) and taken.status == 201
    sold_out = await store.purchase("u", sale_id=sale_id, quantity=1, coupon="ONCE", idempotency_key="3", now=T0)
    assert isinstance(sold_out, Completed) and sold_out.error is Refusal.SOLD_OUT
    _, other_sale = await product_and_sale(store, stock=5, per_user_limit=1)
    over = await store.purchase("u", sale_id=other_sale, quantity=2, coupon="ONCE", idempotency_key="4", now=T0)
    assert isinstance(over, Completed) and over.error is Refusal.LIMIT
    unused = await store.get_coupon("ONCE")
    assert unused is not None and unused.uses == 0
    ok = await store.purchase("u", sale_id=other_sale, quantity=1, coupon="ONCE", idempotency_key="5", now=T0)
    assert isinstance(ok, Completed) and ok.status == 201 and json.loads(ok.body)["total"] == 1800


# Bad input -------------------------------------------------------------------------------

BAD_PURCHASES: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"quantity": 0}, InvalidRequest),
    ({"quantity": -1}, InvalidRequest),
    ({"quantity": limits.MAX_QUANTITY + 1}, InvalidRequest),
    ({"quantity": 10**30}, InvalidRequest),
    ({"quantity": True}, InvalidRequest),
    ({"quantity": 1.0}, InvalidRequest),
    ({"idempotency_key": ""}, InvalidRequest),
    ({"idempotency_key": "k" * (limits.IDEMPOTENCY_KEY_MAX_LENGTH + 1)}, InvalidRequest),
    ({"idempotency_key": "tab\there"}, InvalidRequest),
    ({"coupon": "C" * (limits.MAX_COUPON_CODE_LENGTH + 1)}, InvalidRequest),
    ({"coupon": "no spaces"}, InvalidRequest),
    ({"user": ""}, InvalidRequest),
    ({"user": "u" * (limits.MAX_USER_LENGTH + 1)}, InvalidRequest),
    ({"fingerprint": "f" * (limits.MAX_FINGERPRINT_LENGTH + 1)}, InvalidRequest),
    ({"now": float("nan")}, InvalidRequest),
    ({"sale_id": "no-such-sale"}, UnknownSale),
    ({"sale_id": "bad:id"}, InvalidRequest),
    ({"sale_id": "x" * (limits.MAX_ID_LENGTH + 1)}, InvalidRequest),
    ({"sale_id": None, "product_id": "no-such-product"}, UnknownProduct),
    ({"sale_id": None}, InvalidRequest),
    ({"product_id": "both-given"}, InvalidRequest),
]


@pytest.mark.parametrize(
    ("change", "error"), BAD_PURCHASES, ids=[f"{list(c)}-{i}" for i, (c, _) in enumerate(BAD_PURCHASES)]
)
async def test_bad_purchases_are_refused_and_write_nothing(
    store: StoreBase, change: dict[str, Any], error: type[Exception]
) -> None:
    _, sale_id = await product_and_sale(store)
    await coupon(store, "OK")
    request: dict[str, Any] = {
        "user": "u",
        "sale_id": sale_id,
        "quantity": 1,
        "idempotency_key": "k",
        "now": T0,
        "coupon": "OK",
    } | change
    user = request.pop("user")
    with pytest.raises(error):
        await store.purchase(user, **request)
    sale = await store.get_sale(sale_id)
    assert sale is not None and sale.remaining == 10
    found = await store.get_coupon("OK")
    assert found is not None and found.uses == 0
    assert await store.outbox_fetch() == []
    assert await store.idempotency_record("u", "k", T0) is None


async def test_bad_catalogue_input_is_refused(store: StoreBase) -> None:
    good: dict[str, Any] = {"title": "T", "price": 1, "currency": "EUR", "stock": 1, "now": T0}
    for change in (
        {"price": -1},
        {"price": limits.MAX_PRICE + 1},
        {"stock": -5},
        {"stock": limits.MAX_STOCK + 1},
        {"currency": "euro"},
        {"title": ""},
        {"title": "x" * (limits.MAX_TITLE_LENGTH + 1)},
        {"title": "bell\x07"},
        {"image": "h" * (limits.MAX_IMAGE_URL_LENGTH + 1)},
        {"product_id": "has space"},
        {"now": -1},
    ):
        with pytest.raises(InvalidRequest):
            await store.create_product(**(good | change))
    assert await store.list_products() == []
    product = await store.create_product(**good)
    sale: dict[str, Any] = {
        "product_id": product.id,
        "stock": 1,
        "price": 1,
        "starts_at": T0,
        "ends_at": T0 + 1,
        "per_user_limit": 1,
        "now": T0,
    }
    for change in ({"ends_at": T0}, {"stock": 0}, {"per_user_limit": 0}, {"starts_at": float("inf")}):
        with pytest.raises(InvalidRequest):
            await store.create_sale(**(sale | change))
    for bad in (
        {"code": "c" * (limits.MAX_COUPON_CODE_LENGTH + 1)},
        {"code": ""},
        {"kind": "bogus"},
        {"value": 101},
        {"value": 0},
        {"max_uses": 0},
    ):
        with pytest.raises(InvalidRequest):
            await coupon(store, **bad)
    await coupon(store, "DUP")
    with pytest.raises(AlreadyExists):
        await coupon(store, "DUP")
    with pytest.raises(InvalidRequest):
        await store.set_stock(product.id, -1)


# Pure rules ------------------------------------------------------------------------------


def make_coupon(kind: CouponKind, value: int) -> Coupon:
    return Coupon("C", kind, value, 1, 0, True, T0 + 1, T0)


def test_prices_with_coupons() -> None:
    assert rules.price(999, 3, None) == (2997, 0, 2997)
    assert rules.price(999, 3, make_coupon(CouponKind.PERCENT, 10)) == (2997, 299, 2698)  # rounded down
    assert rules.price(999, 3, make_coupon(CouponKind.PERCENT, 100)) == (2997, 2997, 0)
    assert rules.price(500, 1, make_coupon(CouponKind.AMOUNT, 200)) == (500, 200, 300)
    assert rules.price(500, 1, make_coupon(CouponKind.AMOUNT, 900)) == (500, 500, 0)  # never negative
    assert limits.MAX_PRICE * limits.MAX_QUANTITY < 2**53  # exact as a Lua number


def test_fingerprint_is_the_request_not_its_spelling() -> None:
    a = rules.request_fingerprint(sale_id="s", product_id=None, quantity=1, coupon=None)
    assert a == rules.request_fingerprint(sale_id="s", product_id=None, quantity=1, coupon=None)
    assert a != rules.request_fingerprint(sale_id="s", product_id=None, quantity=2, coupon=None)
    assert a != rules.request_fingerprint(sale_id=None, product_id="s", quantity=1, coupon=None)
    assert len(a) == 64 <= limits.MAX_FINGERPRINT_LENGTH

"""The multi-node commerce store: state in one Redis, every atomic step one Lua script.

A script runs alone on the server, so the checks it makes and the writes they guard see the
same state whichever node sent it: claiming an idempotency key, completing or releasing it,
and the purchase (stock, per-user units, coupon, order, outbox entry, stored response).
Scripts are sent by EVALSHA and loaded on NOSCRIPT (redis-py's `Script`).

Keys (under a configurable prefix P, default `mediacore:commerce:`):
`P product:ID` and `P sale:ID` hashes, `P products` (ids by creation) and `P product_seq`,
`P product:ID:sales` (its sales' ids by creation) and `P sale_seq`,
`P sale:ID:buyers` (user → units bought), `P coupon:CODE` hash and `P coupon:CODE:users`
(set of redeemers), `P order:ID` (order JSON), `P user:N:USER:orders` (list of order ids),
`P outbox` (a Stream of order_id and payload), `P idem:N:USER:KEY` hashes. N is the length
of USER, so any user id and key make one unambiguous key. A script touches only keys it is
given; for Redis Cluster put a hash tag in the prefix (`{commerce}:`) so they share a slot.

Idempotency records carry their expiry (`expires_at`, the caller's clock) and also a Redis
TTL of retention plus lease, so Redis drops them by itself."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any, cast

import redis.asyncio as aioredis

from . import limits, rules
from .flow import Commit, StoreBase
from .model import (
    IN_PROGRESS,
    AlreadyExists,
    Claimed,
    ClaimResult,
    Completed,
    Coupon,
    CouponKind,
    IdempotencyRecord,
    InProgress,
    KeyReused,
    Order,
    OutboxEntry,
    Product,
    Refusal,
    Sale,
)

DEFAULT_PREFIX = "mediacore:commerce:"

MAX_CONNECTIONS = 32
"""Connections one store opens to Redis: requests beyond that wait for a free one instead
of opening thousands of sockets during a flash sale (each command takes microseconds)."""

CONNECTION_WAIT = 30.0
"""Seconds a request waits for a free connection before failing."""

RECORD_TTL = math.ceil(limits.IDEMPOTENCY_RETENTION + limits.IDEMPOTENCY_LEASE)
"""Redis TTL of an idempotency record, seconds: it outlives its logical expiry, then goes."""

CLAIM = """
local r = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'expires_at', 'status', 'body')
if r[1] and tonumber(r[3]) > tonumber(ARGV[2]) then
  if r[2] ~= ARGV[1] then return {'reused'} end
  if r[1] == 'in_progress' then return {'in_progress'} end
  return {'done', r[4], r[5]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'in_progress', 'fingerprint', ARGV[1], 'expires_at', ARGV[3],
           'token', ARGV[4], 'status', '0', 'body', '')
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'claimed'}
"""

COMPLETE = """
local r = redis.call('HMGET', KEYS[1], 'token', 'state')
if r[1] ~= ARGV[1] or r[2] ~= 'in_progress' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3], 'expires_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

RELEASE = """
local r = redis.call('HMGET', KEYS[1], 'token', 'state')
if r[1] == ARGV[1] and r[2] == 'in_progress' then redis.call('DEL', KEYS[1]) end
return 0
"""

INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if #KEYS == 3 then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
end
return 1
"""

SET_FIELD_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: 1 idempotency record, 2 stock hash (sale or product), 3 buyers hash, 4 coupon hash,
#       5 coupon redeemers, 6 order, 7 user's order list, 8 outbox stream
# ARGV: 1 token, 2 stock field, 3 user, 4 quantity, 5 per-user limit (0: none), 6 coupon
#       code ('' none), 7 order id, 8 order JSON, 9 record expiry, 10 record TTL,
#       11..14 bodies for sold_out, limit, coupon_invalid, coupon_used
PURCHASE = """
local owner = redis.call('HMGET', KEYS[1], 'token', 'state')
if owner[1] ~= ARGV[1] or owner[2] ~= 'in_progress' then return 'lost' end
local function refuse(reason, body)
  redis.call('HSET', KEYS[1], 'state', 'done', 'status', '409', 'body', body, 'expires_at', ARGV[9])
  redis.call('EXPIRE', KEYS[1], ARGV[10])
  return reason
end
local qty = tonumber(ARGV[4])
local left = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
if left == nil or left < qty then return refuse('sold_out', ARGV[11]) end
local limit = tonumber(ARGV[5])
if limit > 0 then
  local bought = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
  if bought + qty > limit then return refuse('limit', ARGV[12]) end
end
local code = ARGV[6]
if code ~= '' then
  local c = redis.call('HMGET', KEYS[4], 'uses', 'max_uses', 'once_per_user')
  if not c[1] then return refuse('coupon_invalid', ARGV[13]) end
  if tonumber(c[1]) >= tonumber(c[2]) then return refuse('coupon_used', ARGV[14]) end
  if c[3] == '1' and redis.call('SISMEMBER', KEYS[5], ARGV[3]) == 1 then
    return refuse('coupon_used', ARGV[14])
  end
end
redis.call('HINCRBY', KEYS[2], ARGV[2], -qty)
if limit > 0 then redis.call('HINCRBY', KEYS[3], ARGV[3], qty) end
if code ~= '' then
  redis.call('HINCRBY', KEYS[4], 'uses', 1)
  redis.call('SADD', KEYS[5], ARGV[3])
end
redis.call('SET', KEYS[6], ARGV[8])
redis.call('RPUSH', KEYS[7], ARGV[7])
redis.call('XADD', KEYS[8], '*', 'order_id', ARGV[7], 'payload', ARGV[8])
redis.call('HSET', KEYS[1], 'state', 'done', 'status', '201', 'body', ARGV[8], 'expires_at', ARGV[9])
redis.call('EXPIRE', KEYS[1], ARGV[10])
return 'created'
"""


def _s(value: Any) -> str:
    """A reply as text (replies are bytes; the client is not asked to decode them)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _b(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class RedisCommerceStore(StoreBase):
    """`RedisCommerceStore.from_url("redis://host:6379/0")`, or around a client you own
    (`owns_client=False` leaves it open on `close()`)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, owns_client: bool = True) -> None:
        self.client = client
        self.prefix = prefix
        self._owns_client = owns_client
        self._claim = client.register_script(CLAIM)
        self._complete = client.register_script(COMPLETE)
        self._release = client.register_script(RELEASE)
        self._insert = client.register_script(INSERT)
        self._set_field = client.register_script(SET_FIELD_IF_EXISTS)
        self._purchase = client.register_script(PURCHASE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, max_connections: int = MAX_CONNECTIONS
    ) -> RedisCommerceStore:
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=CONNECTION_WAIT)
        return cls(aioredis.Redis(connection_pool=pool), prefix=prefix)

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()
            await self.client.connection_pool.disconnect()

    # Keys --------------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _user(self, user: str) -> str:
        return f"{len(user)}:{user}"

    def _record_key(self, user: str, key: str) -> str:
        return self._k("idem", self._user(user), key)

    # Catalogue ---------------------------------------------------------------------------
    async def _insert_product(self, product: Product) -> None:
        fields = {
            "id": product.id,
            "title": product.title,
            "price": product.price,
            "currency": product.currency,
            "stock": product.stock,
            "image": product.image,
            "created_at": repr(product.created_at),
        }
        keys = [self._k("product", product.id), self._k("products"), self._k("product_seq")]
        if not await self._insert(keys=keys, args=[product.id, *_flat(fields)]):
            raise AlreadyExists(f"product {product.id!r} exists")

    async def get_product(self, product_id: str) -> Product | None:
        rules.check_id("product_id", product_id)
        return _product(await self.client.hgetall(self._k("product", product_id)))

    async def list_products(self, *, offset: int = 0, limit: int = limits.MAX_PAGE) -> list[Product]:
        rules.check_int("offset", offset, 0, limits.MAX_STOCK)
        rules.check_int("limit", limit, 1, limits.MAX_PAGE)
        ids = await self.client.zrange(self._k("products"), offset, offset + limit - 1)
        async with self.client.pipeline(transaction=False) as pipe:
            for product_id in ids:
                pipe.hgetall(self._k("product", _s(product_id)))
            rows = await pipe.execute()
        return [p for p in map(_product, rows) if p is not None]

    async def _set_stock(self, product_id: str, stock: int) -> Product | None:
        if not await self._set_field(keys=[self._k("product", product_id)], args=["stock", stock]):
            return None
        return await self.get_product(product_id)

    # Sales and coupons -------------------------------------------------------------------
    async def _insert_sale(self, sale: Sale) -> None:
        fields = {
            "id": sale.id,
            "product_id": sale.product_id,
            "price": sale.price,
            "currency": sale.currency,
            "stock": sale.stock,
            "remaining": sale.remaining,
            "starts_at": repr(sale.starts_at),
            "ends_at": repr(sale.ends_at),
            "per_user_limit": sale.per_user_limit,
            "created_at": repr(sale.created_at),
        }
        keys = [self._k("sale", sale.id), self._k("product", sale.product_id, "sales"), self._k("sale_seq")]
        if not await self._insert(keys=keys, args=[sale.id, *_flat(fields)]):
            raise AlreadyExists(f"sale {sale.id!r} exists")

    async def get_sale(self, sale_id: str) -> Sale | None:
        rules.check_id("sale_id", sale_id)
        return _sale(await self.client.hgetall(self._k("sale", sale_id)))

    async def sales_of(self, product_id: str, *, limit: int = limits.MAX_PAGE) -> list[Sale]:
        rules.check_id("product_id", product_id)
        rules.check_int("limit", limit, 1, limits.MAX_PAGE)
        ids = await self.client.zrange(self._k("product", product_id, "sales"), -limit, -1)
        async with self.client.pipeline(transaction=False) as pipe:
            for sale_id in ids:
                pipe.hgetall(self._k("sale", _s(sale_id)))
            rows = await pipe.execute()
        return [s for s in map(_sale, rows) if s is not None]

    async def _insert_coupon(self, coupon: Coupon) -> None:
        fields = {
            "code": coupon.code,
            "kind": coupon.kind.value,
            "value": coupon.value,
            "max_uses": coupon.max_uses,
            "uses": coupon.uses,
            "once_per_user": int(coupon.once_per_user),
            "expires_at": repr(coupon.expires_at),
            "created_at": repr(coupon.created_at),
        }
        if not await self._insert(keys=[self._k("coupon", coupon.code)], args=[coupon.code, *_flat(fields)]):
            raise AlreadyExists(f"coupon {coupon.code!r} exists")

    async def get_coupon(self, code: str) -> Coupon | None:
        rules.check_coupon_code(code)
        return _coupon(await self.client.hgetall(self._k("coupon", code)))

    # Idempotency -------------------------------------------------------------------------
    async def claim_key(self, user: str, key: str, fingerprint: str, now: float) -> ClaimResult:
        rules.check_user(user)
        rules.check_idempotency_key(key)
        rules.check_fingerprint(fingerprint)
        token = uuid.uuid4().hex
        reply = await self._claim(
            keys=[self._record_key(user, key)],
            args=[fingerprint, repr(float(now)), repr(now + limits.IDEMPOTENCY_LEASE), token, RECORD_TTL],
        )
        state = _s(reply[0])
        if state == "claimed":
            return Claimed(token)
        if state == "reused":
            return KeyReused()
        if state == IN_PROGRESS:
            return InProgress(limits.IN_PROGRESS_RETRY_AFTER)
        return Completed(int(reply[1]), _b(reply[2]), replayed=True)

    async def complete_key(self, user: str, key: str, token: str, status: int, body: bytes, now: float) -> bool:
        expires = repr(now + limits.IDEMPOTENCY_RETENTION)
        args: list[Any] = [token, status, body, expires, RECORD_TTL]
        return bool(await self._complete(keys=[self._record_key(user, key)], args=args))

    async def release_key(self, user: str, key: str, token: str) -> None:
        await self._release(keys=[self._record_key(user, key)], args=[token])

    async def idempotency_record(self, user: str, key: str, now: float) -> IdempotencyRecord | None:
        row = await self.client.hgetall(self._record_key(user, key))
        if not row or float(row[b"expires_at"]) <= now:
            return None
        return IdempotencyRecord(
            user=user,
            key=key,
            fingerprint=_s(row[b"fingerprint"]),
            state=_s(row[b"state"]),
            status=int(row[b"status"]),
            body=_b(row[b"body"]),
            expires_at=float(row[b"expires_at"]),
        )

    async def purge_expired(self, now: float) -> int:
        return 0  # records carry a Redis TTL

    # Orders ------------------------------------------------------------------------------
    async def _commit_order(self, commit: Commit, now: float) -> Completed | InProgress:
        order = commit.order
        if order.sale_id is not None:
            stock_key, stock_field = self._k("sale", order.sale_id), "remaining"
            buyers = self._k("sale", order.sale_id, "buyers")
        else:
            stock_key, stock_field = self._k("product", order.product_id), "stock"
            buyers = self._k("product", order.product_id, "buyers")  # not used: no per-user limit
        code = order.coupon or ""
        keys = [
            self._record_key(commit.user, commit.key),
            stock_key,
            buyers,
            self._k("coupon", code),
            self._k("coupon", code, "users"),
            self._k("order", order.id),
            self._k("user", self._user(order.user), "orders"),
            self._k("outbox"),
        ]
        args: list[Any] = [
            commit.token,
            stock_field,
            order.user,
            order.quantity,
            commit.per_user_limit,
            code,
            order.id,
            commit.body,
            repr(now + limits.IDEMPOTENCY_RETENTION),
            RECORD_TTL,
            commit.refusals[Refusal.SOLD_OUT],
            commit.refusals[Refusal.LIMIT],
            commit.refusals[Refusal.COUPON_INVALID],
            commit.refusals[Refusal.COUPON_USED],
        ]
        outcome = _s(await self._purchase(keys=keys, args=args))
        if outcome == "lost":
            return InProgress(limits.IN_PROGRESS_RETRY_AFTER)
        if outcome == "created":
            return Completed(rules.STATUS_CREATED, commit.body, order_id=order.id)
        reason = Refusal(outcome)
        return Completed(rules.STATUS_REFUSED, commit.refusals[reason], error=reason)

    async def get_order(self, order_id: str) -> Order | None:
        rules.check_id("order_id", order_id)
        data = await self.client.get(self._k("order", order_id))
        return None if data is None else rules.order_from_json(_b(data))

    async def orders_of(self, user: str, *, limit: int = limits.MAX_PAGE) -> list[Order]:
        rules.check_user(user)
        rules.check_int("limit", limit, 1, limits.MAX_PAGE)
        ids = await self.client.lrange(self._k("user", self._user(user), "orders"), -limit, -1)
        if not ids:
            return []
        found = await self.client.mget([self._k("order", _s(i)) for i in ids])
        return [rules.order_from_json(_b(d)) for d in found if d is not None]

    # Outbox ------------------------------------------------------------------------------
    async def outbox_fetch(self, limit: int = limits.OUTBOX_BATCH) -> list[OutboxEntry]:
        rules.check_int("limit", limit, 1, limits.OUTBOX_BATCH)
        entries = cast(list[Any], await self.client.xrange(self._k("outbox"), count=limit))
        return [OutboxEntry(_s(entry_id), _s(f[b"order_id"]), _b(f[b"payload"])) for entry_id, f in entries]

    async def outbox_ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            await self.client.xdel(self._k("outbox"), *entry_ids)


def _flat(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def _product(row: Mapping[Any, Any]) -> Product | None:
    if not row:
        return None
    return Product(
        id=_s(row[b"id"]),
        title=_s(row[b"title"]),
        price=int(row[b"price"]),
        currency=_s(row[b"currency"]),
        stock=int(row[b"stock"]),
        image=_s(row[b"image"]),
        created_at=float(row[b"created_at"]),
    )


def _sale(row: Mapping[Any, Any]) -> Sale | None:
    if not row:
        return None
    return Sale(
        id=_s(row[b"id"]),
        product_id=_s(row[b"product_id"]),
        price=int(row[b"price"]),
        currency=_s(row[b"currency"]),
        stock=int(row[b"stock"]),
        remaining=int(row[b"remaining"]),
        starts_at=float(row[b"starts_at"]),
        ends_at=float(row[b"ends_at"]),
        per_user_limit=int(row[b"per_user_limit"]),
        created_at=float(row[b"created_at"]),
    )


def _coupon(row: Mapping[Any, Any]) -> Coupon | None:
    if not row:
        return None
    return Coupon(
        code=_s(row[b"code"]),
        kind=CouponKind(_s(row[b"kind"])),
        value=int(row[b"value"]),
        max_uses=int(row[b"max_uses"]),
        uses=int(row[b"uses"]),
        once_per_user=row[b"once_per_user"] == b"1",
        expires_at=float(row[b"expires_at"]),
        created_at=float(row[b"created_at"]),
    )

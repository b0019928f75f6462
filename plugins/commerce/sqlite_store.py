"""The embedded commerce store: one SQLite file in WAL mode.

One dedicated thread owns the one connection; every call runs there through a single-thread
executor, so writes serialise without blocking the event loop, and each write is one
`BEGIN IMMEDIATE` transaction (the write lock is taken before the first read, so a check
and the write it guards see the same state, also against other processes on the file;
`busy_timeout` lets them queue). CHECK constraints keep stock, remaining units and coupon
uses within bounds even if a rule were wrong."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from . import limits, rules
from .flow import Commit, StoreBase
from .model import (
    DONE,
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

T = TypeVar("T")

BUSY_TIMEOUT = 10.0
"""Seconds a transaction waits for another process holding the write lock before failing:
far above any one purchase, short enough to surface a stuck writer."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, price INTEGER NOT NULL, currency TEXT NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0), image TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sales (
    id TEXT PRIMARY KEY, product_id TEXT NOT NULL REFERENCES products(id), price INTEGER NOT NULL,
    currency TEXT NOT NULL, stock INTEGER NOT NULL,
    remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= stock),
    starts_at REAL NOT NULL, ends_at REAL NOT NULL, per_user_limit INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sales_product ON sales (product_id);
CREATE TABLE IF NOT EXISTS sale_buyers (
    sale_id TEXT NOT NULL, user TEXT NOT NULL, units INTEGER NOT NULL CHECK (units > 0),
    PRIMARY KEY (sale_id, user));
CREATE TABLE IF NOT EXISTS coupons (
    code TEXT PRIMARY KEY, kind TEXT NOT NULL, value INTEGER NOT NULL, max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL CHECK (uses >= 0 AND uses <= max_uses), once_per_user INTEGER NOT NULL,
    expires_at REAL NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS coupon_redemptions (
    code TEXT NOT NULL, user TEXT NOT NULL, order_id TEXT NOT NULL, PRIMARY KEY (code, order_id));
CREATE INDEX IF NOT EXISTS coupon_redemptions_user ON coupon_redemptions (code, user);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, sale_id TEXT, product_id TEXT NOT NULL,
    quantity INTEGER NOT NULL, total INTEGER NOT NULL, coupon TEXT, created_at REAL NOT NULL,
    payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS orders_user ON orders (user);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    user TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, state TEXT NOT NULL,
    token TEXT NOT NULL, status INTEGER NOT NULL, body BLOB NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (user, key));
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);
"""

_PRODUCT = "SELECT id, title, price, currency, stock, image, created_at FROM products"
_SALE = (
    "SELECT id, product_id, price, currency, stock, remaining, starts_at, ends_at, per_user_limit, created_at"
    " FROM sales"
)
_COUPON = "SELECT code, kind, value, max_uses, uses, once_per_user, expires_at, created_at FROM coupons"


def _product(row: Any) -> Product:
    return Product(*row)


def _sale(row: Any) -> Sale:
    return Sale(*row)


def _coupon(row: Any) -> Coupon:
    code, kind, value, max_uses, uses, once, expires_at, created_at = row
    return Coupon(code, CouponKind(kind), value, max_uses, uses, bool(once), expires_at, created_at)


class SqliteCommerceStore(StoreBase):
    """Open with `await SqliteCommerceStore.open(path)`; `close()` when done.

    `synchronous` is SQLite's: FULL (default) makes every committed order survive a power
    loss; NORMAL, still safe against process crashes in WAL mode, trades that for fewer
    fsyncs."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.path = Path(path)
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="commerce-sqlite")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: str = "FULL") -> SqliteCommerceStore:
        store = cls(path, synchronous=synchronous)
        await store._run(store._connect)
        return store

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._disconnect)
        self._executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        assert self._conn is not None
        self._conn.close()
        self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            assert self._conn is not None, "store is closed"
            return fn(self._conn, *args)

        return await self._run(call)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` in one BEGIN IMMEDIATE transaction, committed if it returns."""

        def call() -> T:
            conn = self._conn
            assert conn is not None, "store is closed"
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(call)

    # Catalogue ---------------------------------------------------------------------------
    async def _insert_product(self, product: Product) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?)", _fields(product))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"product {product.id!r} exists") from None

        await self._write(insert)

    async def get_product(self, product_id: str) -> Product | None:
        rules.check_id("product_id", product_id)
        row = await self._read(lambda c: c.execute(f"{_PRODUCT} WHERE id = ?", (product_id,)).fetchone())
        return None if row is None else _product(row)

    async def list_products(self, *, offset: int = 0, limit: int = limits.MAX_PAGE) -> list[Product]:
        rules.check_int("offset", offset, 0, limits.MAX_STOCK)
        rules.check_int("limit", limit, 1, limits.MAX_PAGE)
        rows = await self._read(
            lambda c: c.execute(f"{_PRODUCT} ORDER BY rowid LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        )
        return [_product(r) for r in rows]

    async def _set_stock(self, product_id: str, stock: int) -> Product | None:
        def update(conn: sqlite3.Connection) -> Product | None:
            conn.execute("UPDATE products SET stock = ? WHERE id = ?", (stock, product_id))
            row = conn.execute(f"{_PRODUCT} WHERE id = ?", (product_id,)).fetchone()
            return None if row is None else _product(row)

        return await self._write(update)

    # Sales and coupons -------------------------------------------------------------------
    async def _insert_sale(self, sale: Sale) -> None:
        await self._write(lambda c: c.execute("INSERT INTO sales VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _fields(sale)))

    async def get_sale(self, sale_id: str) -> Sale | None:
        rules.check_id("sale_id", sale_id)
        row = await self._read(lambda c: c.execute(f"{_SALE} WHERE id = ?", (sale_id,)).fetchone())
        return None if row is None else _sale(row)

    async def sales_of(self, product_id: str, *, limit: int = limits.MAX_PAGE) -> list[Sale]:
        rules.check_id("product_id", product_id)
        rules.check_int("limit", limit, 1, limits.MAX_PAGE)
        query = f"{_SALE} WHERE product_id = ? ORDER BY rowid DESC LIMIT ?"
        rows = await self._read(lambda c: c.execute(query, (product_id, limit)).fetchall())
        return [_sale(r) for r in reversed(rows)]

    async def _insert_coupon(self, coupon: Coupon) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("INSERT INTO coupons VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _fields(coupon))
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"coupon {coupon.code!r} exists") from None

        await self._write(insert)

    async def get_coupon(self, code: str) -> Coupon | None:
        rules.check_coupon_code(code)
        row = await self._read(lambda c: c.execute(f"{_COUPON} WHERE code = ?", (code,)).fetchone())
        return None if row is None else _coupon(row)

    # Idempotency -------------------------------------------------------------------------
    async def claim_key(self, user: str, key: str, fingerprint: str, now: float) -> ClaimResult:
        rules.check_user(user)
        rules.check_idempotency_key(key)
        rules.check_fingerprint(fingerprint)
        token = uuid.uuid4().hex

        def claim(conn: sqlite3.Connection) -> ClaimResult:
            row = conn.execute(
                "SELECT fingerprint, state, status, body FROM idempotency"
                " WHERE user = ? AND key = ? AND expires_at > ?",
                (user, key, now),
            ).fetchone()
            if row is not None:
                found, state, status, body = row
                if found != fingerprint:
                    return KeyReused()
                if state == IN_PROGRESS:
                    return InProgress(limits.IN_PROGRESS_RETRY_AFTER)
                return Completed(status, bytes(body), replayed=True)
            conn.execute(
                "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, 0, x'', ?)",
                (user, key, fingerprint, IN_PROGRESS, token, now + limits.IDEMPOTENCY_LEASE),
            )
            return Claimed(token)

        return await self._write(claim)

    async def complete_key(self, user: str, key: str, token: str, status: int, body: bytes, now: float) -> bool:
        return await self._write(_complete, user, key, token, status, body, now)

    async def release_key(self, user: str, key: str, token: str) -> None:
        await self._write(
            lambda c: c.execute(
                "DELETE FROM idempotency WHERE user = ? AND key = ? AND token = ? AND state = ?",
                (user, key, token, IN_PROGRESS),
            )
        )

    async def idempotency_record(self, user: str, key: str, now: float) -> IdempotencyRecord | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT user, key, fingerprint, state, status, body, expires_at FROM idempotency"
                " WHERE user = ? AND key = ? AND expires_at > ?",
                (user, key, now),
            ).fetchone()
        )
        if row is None:
            return None
        user_, key_, fingerprint, state, status, body, expires_at = row
        return IdempotencyRecord(user_, key_, fingerprint, state, status, bytes(body), expires_at)

    async def purge_expired(self, now: float) -> int:
        return await self._write(lambda c: c.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,)).rowcount)

    # Orders ------------------------------------------------------------------------------
    async def _commit_order(self, commit: Commit, now: float) -> Completed | InProgress:
        return await self._write(_commit_order, commit, now)

    async def get_order(self, order_id: str) -> Order | None:
        rules.check_id("order_id", order_id)
        row = await self._read(lambda c: c.execute("SELECT payload FROM orders WHERE id = ?", (order_id,)).fetchone())
        return None if row is None else rules.order_from_json(bytes(row[0]))

    async def orders_of(self, user: str, *, limit: int = limits.MAX_PAGE) -> list[Order]:
        rules.check_user(user)
        rules.check_int("limit", limit, 1, limits.MAX_PAGE)
        rows = await self._read(
            lambda c: c.execute(
                "SELECT payload FROM"
                " (SELECT payload, rowid AS r FROM orders WHERE user = ? ORDER BY rowid DESC LIMIT ?) ORDER BY r",
                (user, limit),
            ).fetchall()
        )
        return [rules.order_from_json(bytes(r[0])) for r in rows]

    # Outbox ------------------------------------------------------------------------------
    async def outbox_fetch(self, limit: int = limits.OUTBOX_BATCH) -> list[OutboxEntry]:
        rules.check_int("limit", limit, 1, limits.OUTBOX_BATCH)
        rows = await self._read(
            lambda c: c.execute("SELECT seq, order_id, payload FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        )
        return [OutboxEntry(str(seq), order_id, bytes(payload)) for seq, order_id, payload in rows]

    async def outbox_ack(self, entry_ids: list[str]) -> None:
        seqs = [(int(i),) for i in entry_ids]
        await self._write(lambda c: c.executemany("DELETE FROM outbox WHERE seq = ?", seqs))


def _fields(record: Product | Sale | Coupon) -> tuple[Any, ...]:
    return tuple(getattr(record, f.name) for f in dataclasses.fields(record))


def _complete(conn: sqlite3.Connection, user: str, key: str, token: str, status: int, body: bytes, now: float) -> bool:
    cursor = conn.execute(
        "UPDATE idempotency SET state = ?, status = ?, body = ?, expires_at = ?"
        " WHERE user = ? AND key = ? AND token = ? AND state = ?",
        (DONE, status, body, now + limits.IDEMPOTENCY_RETENTION, user, key, token, IN_PROGRESS),
    )
    return cursor.rowcount == 1


def _commit_order(conn: sqlite3.Connection, commit: Commit, now: float) -> Completed | InProgress:
    """The purchase transaction (see StoreBase._commit_order); runs inside BEGIN IMMEDIATE."""
    order = commit.order
    owner = conn.execute(
        "SELECT token, state FROM idempotency WHERE user = ? AND key = ?", (commit.user, commit.key)
    ).fetchone()
    if owner is None or owner[0] != commit.token or owner[1] != IN_PROGRESS:
        return InProgress(limits.IN_PROGRESS_RETRY_AFTER)

    def refuse(reason: Refusal) -> Completed:
        body = commit.refusals[reason]
        _complete(conn, commit.user, commit.key, commit.token, rules.STATUS_REFUSED, body, now)
        return Completed(rules.STATUS_REFUSED, body, error=reason)

    if order.sale_id is not None:
        row = conn.execute("SELECT remaining FROM sales WHERE id = ?", (order.sale_id,)).fetchone()
    else:
        row = conn.execute("SELECT stock FROM products WHERE id = ?", (order.product_id,)).fetchone()
    if row is None or row[0] < order.quantity:
        return refuse(Refusal.SOLD_OUT)
    if commit.per_user_limit:
        bought = conn.execute(
            "SELECT units FROM sale_buyers WHERE sale_id = ? AND user = ?", (order.sale_id, order.user)
        ).fetchone()
        if (bought[0] if bought else 0) + order.quantity > commit.per_user_limit:
            return refuse(Refusal.LIMIT)
    if order.coupon is not None:
        coupon = conn.execute(
            "SELECT uses, max_uses, once_per_user FROM coupons WHERE code = ?", (order.coupon,)
        ).fetchone()
        if coupon is None:
            return refuse(Refusal.COUPON_INVALID)
        uses, max_uses, once_per_user = coupon
        if uses >= max_uses:
            return refuse(Refusal.COUPON_USED)
        redeemed = conn.execute(
            "SELECT 1 FROM coupon_redemptions WHERE code = ? AND user = ?", (order.coupon, order.user)
        ).fetchone()
        if once_per_user and redeemed:
            return refuse(Refusal.COUPON_USED)

    if order.sale_id is not None:
        conn.execute("UPDATE sales SET remaining = remaining - ? WHERE id = ?", (order.quantity, order.sale_id))
        conn.execute(
            "INSERT INTO sale_buyers VALUES (?, ?, ?) ON CONFLICT (sale_id, user) DO UPDATE SET units = units + ?",
            (order.sale_id, order.user, order.quantity, order.quantity),
        )
    else:
        conn.execute("UPDATE products SET stock = stock - ? WHERE id = ?", (order.quantity, order.product_id))
    if order.coupon is not None:
        conn.execute("UPDATE coupons SET uses = uses + 1 WHERE code = ?", (order.coupon,))
        conn.execute("INSERT INTO coupon_redemptions VALUES (?, ?, ?)", (order.coupon, order.user, order.id))
    conn.execute(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            order.id,
            order.user,
            order.sale_id,
            order.product_id,
            order.quantity,
            order.total,
            order.coupon,
            order.created_at,
            commit.body,
        ),
    )
    conn.execute("INSERT INTO outbox (order_id, payload) VALUES (?, ?)", (order.id, commit.body))
    _complete(conn, commit.user, commit.key, commit.token, rules.STATUS_CREATED, commit.body, now)
    return Completed(rules.STATUS_CREATED, commit.body, order_id=order.id)

"""`CommerceStore`: the one async interface of the commerce state, implemented by the
embedded SQLite store and the Redis store. The HTTP layer calls only this and maps the
outcomes to status codes.

Every method checks its arguments first (`InvalidRequest`, nothing read or written). Times
(`now`) are seconds since the epoch passed in by the caller."""

from __future__ import annotations

from typing import Protocol

from . import limits
from .model import (
    ClaimResult,
    Coupon,
    CouponKind,
    IdempotencyRecord,
    Order,
    OutboxEntry,
    Product,
    PurchaseResult,
    Sale,
)


class CommerceStore(Protocol):
    # Catalogue ---------------------------------------------------------------------------
    async def create_product(
        self,
        *,
        title: str,
        price: int,
        currency: str,
        stock: int,
        now: float,
        image: str = "",
        product_id: str | None = None,
    ) -> Product:
        """A new product; `product_id` lets a shop keep its own SKU (AlreadyExists if taken),
        otherwise an id is generated."""
        ...

    async def get_product(self, product_id: str) -> Product | None: ...

    async def list_products(self, *, offset: int = 0, limit: int = limits.MAX_PAGE) -> list[Product]:
        """Products in the order they were created."""
        ...

    async def set_stock(self, product_id: str, stock: int) -> Product:
        """Sets the units left outside sales (UnknownProduct if there is no such product)."""
        ...

    # Flash sales -------------------------------------------------------------------------
    async def create_sale(
        self,
        *,
        product_id: str,
        stock: int,
        price: int,
        starts_at: float,
        ends_at: float,
        per_user_limit: int,
        now: float,
    ) -> Sale:
        """A sale of `stock` units of an existing product at `price`, selling within
        [starts_at, ends_at), at most `per_user_limit` units per user."""
        ...

    async def get_sale(self, sale_id: str) -> Sale | None:
        """The sale with its `remaining` units."""
        ...

    async def sales_of(self, product_id: str, *, limit: int = limits.MAX_PAGE) -> list[Sale]:
        """The product's newest `limit` sales, oldest first (the commerce plugin finds the
        live sale of a product card with it)."""
        ...

    # Coupons -----------------------------------------------------------------------------
    async def create_coupon(
        self,
        *,
        code: str,
        kind: CouponKind,
        value: int,
        expires_at: float,
        now: float,
        max_uses: int = 1,
        once_per_user: bool = True,
    ) -> Coupon: ...

    async def get_coupon(self, code: str) -> Coupon | None: ...

    # Orders ------------------------------------------------------------------------------
    async def purchase(
        self,
        user: str,
        *,
        quantity: int,
        idempotency_key: str,
        now: float,
        sale_id: str | None = None,
        product_id: str | None = None,
        coupon: str | None = None,
        fingerprint: str | None = None,
    ) -> PurchaseResult:
        """Buys `quantity` units of a sale or (outside sales) a product, at most once per
        (user, idempotency_key). Stock check, per-user count, decrement, coupon redemption,
        order, outbox entry and the stored response are one atomic step; a refused purchase
        changes nothing but the stored response. `fingerprint` defaults to
        `rules.request_fingerprint` of the arguments. Raises InvalidRequest, UnknownSale,
        UnknownProduct before anything is written."""
        ...

    async def get_order(self, order_id: str) -> Order | None: ...

    async def orders_of(self, user: str, *, limit: int = limits.MAX_PAGE) -> list[Order]:
        """The user's newest orders, oldest first."""
        ...

    # Idempotency records -----------------------------------------------------------------
    async def claim_key(self, user: str, key: str, fingerprint: str, now: float) -> ClaimResult:
        """Claims (user, key) for a request with this fingerprint for IDEMPOTENCY_LEASE
        seconds: `Claimed(token)`, or what the request must answer instead (the stored
        response, in progress, or reused with another fingerprint). `purchase` uses it;
        other idempotent operations may too."""
        ...

    async def complete_key(self, user: str, key: str, token: str, status: int, body: bytes, now: float) -> bool:
        """Stores the response of a claimed key for IDEMPOTENCY_RETENTION seconds; False if
        the claim was lost (its lease ended and another request claimed the key)."""
        ...

    async def release_key(self, user: str, key: str, token: str) -> None:
        """Forgets a claim whose request failed, so a retry need not wait for the lease."""
        ...

    async def idempotency_record(self, user: str, key: str, now: float) -> IdempotencyRecord | None:
        """The live record of (user, key), None when absent or expired."""
        ...

    async def purge_expired(self, now: float) -> int:
        """Deletes expired idempotency records; returns how many (a backend whose records
        expire by themselves returns 0)."""
        ...

    # Outbox ------------------------------------------------------------------------------
    async def outbox_fetch(self, limit: int = limits.OUTBOX_BATCH) -> list[OutboxEntry]:
        """The oldest orders not yet acknowledged by the shop backend."""
        ...

    async def outbox_ack(self, entry_ids: list[str]) -> None:
        """Removes delivered entries."""
        ...

    async def close(self) -> None: ...

"""What both backends share: argument checks, building records, and the purchase sequence.

A backend implements storage and two atomic steps: claiming an idempotency key, and
`_commit_order` (stock check, per-user count, decrement, coupon redemption, order, outbox
entry and stored response, all or nothing). `purchase` runs the sequence around them:

1. check the arguments and read the sale or product (bad or unknown: raise, nothing written);
2. claim (user, key): a replay, an in-flight or a reused key ends here;
3. decide what the fixed fields and `now` decide (`rules`: sale window, coupon expiry, price);
4. commit atomically, or store the refusal.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

from . import limits, rules
from .model import (
    Claimed,
    ClaimResult,
    Completed,
    Coupon,
    CouponKind,
    InProgress,
    InvalidRequest,
    Order,
    Product,
    PurchaseResult,
    Refusal,
    Sale,
    UnknownProduct,
    UnknownSale,
)

ATOMIC_REFUSALS = (Refusal.SOLD_OUT, Refusal.LIMIT, Refusal.COUPON_INVALID, Refusal.COUPON_USED)
"""What the atomic step itself may refuse: the state it checks (stock, the user's units, the
coupon's uses and redeemers)."""


@dataclass(frozen=True, slots=True)
class Commit:
    """One purchase for the backend's atomic step. `per_user_limit` 0 means none (purchases
    outside sales); `refusals` are the bodies to store if the step refuses."""

    user: str
    key: str
    token: str
    order: Order
    body: bytes
    per_user_limit: int
    coupon: Coupon | None
    refusals: dict[Refusal, bytes]


def new_id() -> str:
    return uuid.uuid4().hex


class StoreBase(ABC):
    """The shared half of a `CommerceStore`; subclasses provide the storage."""

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
        product = Product(
            id=new_id() if product_id is None else rules.check_id("product_id", product_id),
            title=rules.check_text("title", title, limits.MAX_TITLE_LENGTH),
            price=rules.check_int("price", price, 0, limits.MAX_PRICE),
            currency=rules.check_currency(currency),
            stock=rules.check_int("stock", stock, 0, limits.MAX_STOCK),
            image=rules.check_text("image", image, limits.MAX_IMAGE_URL_LENGTH, empty=True),
            created_at=rules.check_time("now", now),
        )
        await self._insert_product(product)
        return product

    async def set_stock(self, product_id: str, stock: int) -> Product:
        rules.check_id("product_id", product_id)
        rules.check_int("stock", stock, 0, limits.MAX_STOCK)
        product = await self._set_stock(product_id, stock)
        if product is None:
            raise UnknownProduct(f"no product {product_id!r}")
        return product

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
        rules.check_id("product_id", product_id)
        start, end = rules.check_sale_window(starts_at, ends_at)
        sale_stock = rules.check_int("stock", stock, 1, limits.MAX_STOCK)
        sale_price = rules.check_int("price", price, 0, limits.MAX_PRICE)
        limit = rules.check_int("per_user_limit", per_user_limit, 1, limits.MAX_PER_USER_LIMIT)
        created = rules.check_time("now", now)
        product = await self.get_product(product_id)
        if product is None:
            raise UnknownProduct(f"no product {product_id!r}")
        sale = Sale(
            id=new_id(),
            product_id=product_id,
            price=sale_price,
            currency=product.currency,
            stock=sale_stock,
            remaining=sale_stock,
            starts_at=start,
            ends_at=end,
            per_user_limit=limit,
            created_at=created,
        )
        await self._insert_sale(sale)
        return sale

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
    ) -> Coupon:
        ckind, cvalue = rules.check_coupon_value(kind, value)
        if not isinstance(once_per_user, bool):
            raise InvalidRequest("once_per_user must be true or false")
        coupon = Coupon(
            code=rules.check_coupon_code(code),
            kind=ckind,
            value=cvalue,
            max_uses=rules.check_int("max_uses", max_uses, 1, limits.MAX_COUPON_USES),
            uses=0,
            once_per_user=once_per_user,
            expires_at=rules.check_time("expires_at", expires_at),
            created_at=rules.check_time("now", now),
        )
        await self._insert_coupon(coupon)
        return coupon

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
        rules.check_user(user)
        rules.check_idempotency_key(idempotency_key)
        rules.check_quantity(quantity)
        rules.check_time("now", now)
        if coupon is not None:
            rules.check_coupon_code(coupon)
        if (sale_id is None) == (product_id is None):
            raise InvalidRequest("give exactly one of sale_id and product_id")
        if fingerprint is None:
            fingerprint = rules.request_fingerprint(
                sale_id=sale_id, product_id=product_id, quantity=quantity, coupon=coupon
            )
        rules.check_fingerprint(fingerprint)

        refusal: Refusal | None = None
        if sale_id is not None:
            sale = await self.get_sale(rules.check_id("sale_id", sale_id))
            if sale is None:
                raise UnknownSale(f"no sale {sale_id!r}")
            target_product, unit_price, currency = sale.product_id, sale.price, sale.currency
            per_user = sale.per_user_limit
            refusal = rules.sale_refusal(sale, now)
        else:
            assert product_id is not None
            product = await self.get_product(rules.check_id("product_id", product_id))
            if product is None:
                raise UnknownProduct(f"no product {product_id!r}")
            target_product, unit_price, currency, per_user = product.id, product.price, product.currency, 0

        claim = await self.claim_key(user, idempotency_key, fingerprint, now)
        if not isinstance(claim, Claimed):
            return claim
        try:
            found: Coupon | None = None
            if refusal is None and coupon is not None:
                found = await self.get_coupon(coupon)
                refusal = rules.coupon_refusal(found, now)
            if refusal is not None:
                body = rules.refusal_body(refusal)
                if not await self.complete_key(user, idempotency_key, claim.token, rules.STATUS_REFUSED, body, now):
                    return InProgress(limits.IN_PROGRESS_RETRY_AFTER)
                return Completed(rules.STATUS_REFUSED, body, error=refusal)
            subtotal, discount, total = rules.price(unit_price, quantity, found)
            order = Order(
                id=new_id(),
                user=user,
                product_id=target_product,
                sale_id=sale_id,
                quantity=quantity,
                unit_price=unit_price,
                subtotal=subtotal,
                discount=discount,
                total=total,
                currency=currency,
                coupon=coupon,
                created_at=float(now),
            )
            commit = Commit(
                user=user,
                key=idempotency_key,
                token=claim.token,
                order=order,
                body=rules.order_json(order),
                per_user_limit=per_user,
                coupon=found,
                refusals={r: rules.refusal_body(r) for r in ATOMIC_REFUSALS},
            )
            return await self._commit_order(commit, now)
        except BaseException:
            # The claim must not block retries for a whole lease; the atomic step either
            # completed the record (then releasing is a no-op) or changed nothing.
            await self.release_key(user, idempotency_key, claim.token)
            raise

    # Storage, provided by each backend ----------------------------------------------------
    @abstractmethod
    async def get_product(self, product_id: str) -> Product | None: ...

    @abstractmethod
    async def get_sale(self, sale_id: str) -> Sale | None: ...

    @abstractmethod
    async def sales_of(self, product_id: str, *, limit: int = limits.MAX_PAGE) -> list[Sale]: ...

    @abstractmethod
    async def get_coupon(self, code: str) -> Coupon | None: ...

    @abstractmethod
    async def claim_key(self, user: str, key: str, fingerprint: str, now: float) -> ClaimResult: ...

    @abstractmethod
    async def complete_key(self, user: str, key: str, token: str, status: int, body: bytes, now: float) -> bool: ...

    @abstractmethod
    async def release_key(self, user: str, key: str, token: str) -> None: ...

    @abstractmethod
    async def _insert_product(self, product: Product) -> None:
        """Stores a new product; AlreadyExists if its id is taken."""

    @abstractmethod
    async def _set_stock(self, product_id: str, stock: int) -> Product | None: ...

    @abstractmethod
    async def _insert_sale(self, sale: Sale) -> None: ...

    @abstractmethod
    async def _insert_coupon(self, coupon: Coupon) -> None:
        """Stores a new coupon; AlreadyExists if its code is taken."""

    @abstractmethod
    async def _commit_order(self, commit: Commit, now: float) -> Completed | InProgress:
        """The atomic step. Within one transaction or script, unless the claim was lost
        (then InProgress, nothing written): if the stock (sale `remaining` or product
        `stock`) is below the quantity → SOLD_OUT; if the user's units in this sale plus
        the quantity exceed `per_user_limit` (when nonzero) → LIMIT; if the coupon is
        gone → COUPON_INVALID, used up or (once_per_user) redeemed by this user →
        COUPON_USED; a refusal stores its body under the key and changes nothing else.
        Otherwise decrement the stock, add the units to the user's count, redeem the
        coupon, store the order and an outbox entry (payload: the order JSON), store
        201 + `commit.body` under the key, and return Completed with the order id."""

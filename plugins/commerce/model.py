"""Commerce data and outcomes: products, flash sales, coupons, orders, outbox entries,
idempotency records, what a purchase returns, and the errors of bad requests.

Money is an integer count of the currency's minor unit (cents), never a float. Times are
seconds since the epoch, passed in by the caller."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CommerceError(Exception):
    """Base of the store's errors; the message is stable and safe to show a client."""


class InvalidRequest(CommerceError, ValueError):
    """An argument breaks a rule or a bound (see `limits`); nothing was read or written."""


class UnknownProduct(CommerceError, LookupError):
    """No product has this id; nothing was written."""


class UnknownSale(CommerceError, LookupError):
    """No sale has this id; nothing was written."""


class AlreadyExists(CommerceError):
    """A product id or coupon code is taken; nothing was written."""


class Refusal(StrEnum):
    """Why a well-formed purchase was refused; the value is the `error` of the response body."""

    SOLD_OUT = "sold_out"
    LIMIT = "limit"
    NOT_STARTED = "not_started"
    ENDED = "ended"
    COUPON_INVALID = "coupon_invalid"
    COUPON_USED = "coupon_used"
    COUPON_EXPIRED = "coupon_expired"


class CouponKind(StrEnum):
    PERCENT = "percent"
    """`value` percent off the subtotal (1..100), rounded down to the minor unit."""
    AMOUNT = "amount"
    """`value` minor units off the subtotal, never below zero."""


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    title: str
    price: int
    """Unit price in minor units, paid when bought outside a sale."""
    currency: str
    stock: int
    """Units left to sell outside sales; sales have stock of their own."""
    image: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Sale:
    """A flash sale of one product: its own stock at its own price within [starts_at, ends_at).
    Everything but `remaining` is fixed when the sale is created."""

    id: str
    product_id: str
    price: int
    currency: str
    stock: int
    remaining: int
    starts_at: float
    ends_at: float
    per_user_limit: int
    """Units one user may buy in this sale, over all their orders."""
    created_at: float


@dataclass(frozen=True, slots=True)
class Coupon:
    """Everything but `uses` is fixed when the coupon is created."""

    code: str
    kind: CouponKind
    value: int
    max_uses: int
    """Orders that may redeem it in total: 1 for a single-use code."""
    uses: int
    once_per_user: bool
    expires_at: float
    created_at: float


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    user: str
    product_id: str
    sale_id: str | None
    quantity: int
    unit_price: int
    subtotal: int
    discount: int
    total: int
    currency: str
    coupon: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An order waiting to be handed to the shop backend; `id` is the backend's handle for
    acknowledging it (a row number or a stream entry id)."""

    id: str
    order_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    user: str
    key: str
    fingerprint: str
    state: str
    """`in_progress` (claimed, lease running) or `done` (status and body stored)."""
    status: int
    body: bytes
    expires_at: float


IN_PROGRESS = "in_progress"
DONE = "done"


@dataclass(frozen=True, slots=True)
class Completed:
    """The response to send: `status` and `body` byte for byte. `replayed` is true when they
    were stored by an earlier request with the same key."""

    status: int
    body: bytes
    replayed: bool = False
    order_id: str | None = None
    """The order created, None for a refusal or a replay."""
    error: Refusal | None = None


@dataclass(frozen=True, slots=True)
class InProgress:
    """A request with the same key is still in flight (HTTP 409 `in_progress`, Retry-After)."""

    retry_after: int


@dataclass(frozen=True, slots=True)
class KeyReused:
    """The key was used by the same user for a different request (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """The key is ours until the lease ends; `token` proves it when completing."""

    token: str


PurchaseResult = Completed | InProgress | KeyReused
ClaimResult = Claimed | Completed | InProgress | KeyReused

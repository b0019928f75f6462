"""The pure decisions of commerce, shared by every backend: argument checks, sale windows,
coupon validity and prices, request fingerprints, and the bytes of every response.

Nothing here reads a clock or touches storage: `now` is passed in."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from . import limits
from .model import Coupon, CouponKind, InvalidRequest, Order, Refusal, Sale

STATUS_CREATED = 201
"""Status of a purchase that created an order."""
STATUS_REFUSED = 409
"""Status of a purchase refused by the state of the sale, stock or coupon."""

_ID = re.compile(r"[A-Za-z0-9_.\-]+")
_CODE = re.compile(r"[A-Za-z0-9_\-]+")
_KEY = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_CURRENCY = re.compile(r"[A-Z]{3}")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 32 else value[:32] + "...")


def check_id(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string")
    if len(value) > limits.MAX_ID_LENGTH:
        raise InvalidRequest(f"{what} of {len(value)} characters exceeds {limits.MAX_ID_LENGTH}")
    if not _ID.fullmatch(value):
        raise InvalidRequest(f"{what} {_shown(value)} may contain only letters, digits, '_', '.', '-'")
    return value


def check_user(user: object) -> str:
    if not isinstance(user, str) or not user:
        raise InvalidRequest("user must be a non-empty string")
    if len(user) > limits.MAX_USER_LENGTH:
        raise InvalidRequest(f"user of {len(user)} characters exceeds {limits.MAX_USER_LENGTH}")
    if not user.isprintable():
        raise InvalidRequest("user contains control characters")
    return user


def check_idempotency_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidRequest("an idempotency key is required")
    if len(key) > limits.IDEMPOTENCY_KEY_MAX_LENGTH:
        raise InvalidRequest(f"idempotency key of {len(key)} characters exceeds {limits.IDEMPOTENCY_KEY_MAX_LENGTH}")
    if not _KEY.fullmatch(key):
        raise InvalidRequest("idempotency key must be printable ASCII without leading or trailing spaces")
    return key


def check_fingerprint(fingerprint: object) -> str:
    if not isinstance(fingerprint, str) or not fingerprint:
        raise InvalidRequest("fingerprint must be a non-empty string")
    if len(fingerprint) > limits.MAX_FINGERPRINT_LENGTH or not _KEY.fullmatch(fingerprint):
        raise InvalidRequest(f"fingerprint must be at most {limits.MAX_FINGERPRINT_LENGTH} printable ASCII characters")
    return fingerprint


def check_coupon_code(code: object) -> str:
    if not isinstance(code, str) or not code:
        raise InvalidRequest("coupon code must be a non-empty string")
    if len(code) > limits.MAX_COUPON_CODE_LENGTH:
        raise InvalidRequest(f"coupon code of {len(code)} characters exceeds {limits.MAX_COUPON_CODE_LENGTH}")
    if not _CODE.fullmatch(code):
        raise InvalidRequest(f"coupon code {_shown(code)} may contain only letters, digits, '_', '-'")
    return code


def check_int(what: str, value: object, low: int, high: int) -> int:
    """An int (not a bool) within [low, high]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{what} must be an integer")
    if not low <= value <= high:
        raise InvalidRequest(f"{what} must be between {low} and {high}, not {value}")
    return value


def check_quantity(quantity: object) -> int:
    return check_int("quantity", quantity, 1, limits.MAX_QUANTITY)


def check_time(what: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidRequest(f"{what} must be a finite number of seconds since the epoch")
    if not 0 <= value <= limits.MAX_TIME:
        raise InvalidRequest(f"{what} must be between 0 and {limits.MAX_TIME:.0f}")
    return float(value)


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise InvalidRequest("currency must be an ISO 4217 code such as 'EUR'")
    return currency


def check_text(what: str, value: object, longest: int, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise InvalidRequest(f"{what} must be a {'' if empty else 'non-empty '}string")
    if len(value) > longest:
        raise InvalidRequest(f"{what} of {len(value)} characters exceeds {longest}")
    if not value.isprintable():
        raise InvalidRequest(f"{what} contains control characters")
    return value


def check_sale_window(starts_at: object, ends_at: object) -> tuple[float, float]:
    start, end = check_time("starts_at", starts_at), check_time("ends_at", ends_at)
    if end <= start:
        raise InvalidRequest("a sale must end after it starts")
    return start, end


def check_coupon_value(kind: object, value: object) -> tuple[CouponKind, int]:
    if not isinstance(kind, str) or kind not in (CouponKind.PERCENT, CouponKind.AMOUNT):
        raise InvalidRequest("coupon kind must be 'percent' or 'amount'")
    ckind = CouponKind(kind)
    high = limits.MAX_PERCENT if ckind is CouponKind.PERCENT else limits.MAX_PRICE * limits.MAX_QUANTITY
    return ckind, check_int("coupon value", value, 1, high)


def sale_refusal(sale: Sale, now: float) -> Refusal | None:
    """A sale sells within [starts_at, ends_at)."""
    if now < sale.starts_at:
        return Refusal.NOT_STARTED
    if now >= sale.ends_at:
        return Refusal.ENDED
    return None


def coupon_refusal(coupon: Coupon | None, now: float) -> Refusal | None:
    """What the coupon's fixed fields and `now` refuse. Whether uses are left, and whether this
    user redeemed it already, is state the backend checks in the purchase's atomic step."""
    if coupon is None:
        return Refusal.COUPON_INVALID
    if now >= coupon.expires_at:
        return Refusal.COUPON_EXPIRED
    return None


def price(unit_price: int, quantity: int, coupon: Coupon | None) -> tuple[int, int, int]:
    """(subtotal, discount, total) in minor units. A percent coupon's discount is rounded
    down (the shop never gives away more than it says); an amount coupon takes at most the
    subtotal, so a total is never negative."""
    subtotal = unit_price * quantity
    if coupon is None:
        discount = 0
    elif coupon.kind is CouponKind.PERCENT:
        discount = subtotal * coupon.value // 100
    else:
        discount = min(coupon.value, subtotal)
    return subtotal, discount, subtotal - discount


def request_fingerprint(*, sale_id: str | None, product_id: str | None, quantity: int, coupon: str | None) -> str:
    """What makes two purchase requests the same request: the same target, quantity and
    coupon, however the JSON was spelled. SHA-256 hex of a canonical encoding."""
    canonical = _canonical({"sale_id": sale_id, "product_id": product_id, "quantity": quantity, "coupon": coupon})
    return hashlib.sha256(canonical).hexdigest()


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def order_json(order: Order) -> bytes:
    """The order as JSON: the body of the 201 response, the stored order and the webhook
    payload are these same bytes."""
    return _canonical(
        {
            "order_id": order.id,
            "user": order.user,
            "product_id": order.product_id,
            "sale_id": order.sale_id,
            "quantity": order.quantity,
            "unit_price": order.unit_price,
            "subtotal": order.subtotal,
            "discount": order.discount,
            "total": order.total,
            "currency": order.currency,
            "coupon": order.coupon,
            "created_at": order.created_at,
        }
    )


def order_from_json(data: bytes) -> Order:
    d = json.loads(data)
    return Order(
        id=d["order_id"],
        user=d["user"],
        product_id=d["product_id"],
        sale_id=d["sale_id"],
        quantity=d["quantity"],
        unit_price=d["unit_price"],
        subtotal=d["subtotal"],
        discount=d["discount"],
        total=d["total"],
        currency=d["currency"],
        coupon=d["coupon"],
        created_at=d["created_at"],
    )


def refusal_body(reason: Refusal) -> bytes:
    return _canonical({"error": reason.value})

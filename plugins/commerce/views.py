"""The JSON shapes of the catalogue: products, sales and coupons as the routes answer them."""

from __future__ import annotations

from typing import Any

from .model import Coupon, Product, Sale
from .rules import sale_refusal


def product_json(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "title": product.title,
        "price": product.price,
        "currency": product.currency,
        "stock": product.stock,
        "image": product.image,
        "created_at": product.created_at,
    }


def sale_state(sale: Sale, now: float) -> str:
    """`scheduled`, `live`, `sold_out` or `ended` at `now`."""
    refusal = sale_refusal(sale, now)
    if refusal is not None:
        return "scheduled" if refusal.value == "not_started" else "ended"
    return "live" if sale.remaining > 0 else "sold_out"


def sale_json(sale: Sale, now: float) -> dict[str, Any]:
    return {
        "id": sale.id,
        "product_id": sale.product_id,
        "price": sale.price,
        "currency": sale.currency,
        "stock": sale.stock,
        "remaining": sale.remaining,
        "starts_at": sale.starts_at,
        "ends_at": sale.ends_at,
        "per_user_limit": sale.per_user_limit,
        "created_at": sale.created_at,
        "state": sale_state(sale, now),
    }


def coupon_json(coupon: Coupon) -> dict[str, Any]:
    return {
        "code": coupon.code,
        "kind": coupon.kind.value,
        "value": coupon.value,
        "max_uses": coupon.max_uses,
        "uses": coupon.uses,
        "once_per_user": coupon.once_per_user,
        "expires_at": coupon.expires_at,
        "created_at": coupon.created_at,
    }

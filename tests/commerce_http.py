"""Helpers of the commerce plugin's HTTP tests: tokens for many users, an engine running the
plugin, and JSON calls."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from mediacore.access.identity import Role, issue

SECRET = "a-shop-backend-secret-of-32-bytes-or-more"


def token(sub: str, role: Role = Role.VIEWER, ttl: float = 3600, now: float | None = None) -> str:
    return issue(SECRET.encode(), sub, role, ttl, time.time() if now is None else now)


def auth(sub: str, role: Role = Role.VIEWER, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, role)}", **extra}


ADMIN = auth("shop-admin", Role.ADMIN)
HOST = auth("host-1", Role.HOST)


async def call(
    http: aiohttp.ClientSession, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, path, headers=headers, **kw) as r:
        body = await r.read()
        try:
            return r.status, json.loads(body) if body else None
        except ValueError:
            return r.status, body


async def new_sale(
    http: aiohttp.ClientSession, stock: int = 100, per_user_limit: int = 2, price: int = 2900
) -> tuple[str, str]:
    """(product id, sale id) of a fresh product with a live sale of `stock` units."""
    status, product = await call(http, "POST", "/api/products", ADMIN, json={"title": "Lamp", "price": 4900})
    assert status == 201, product
    now = time.time()
    body = {
        "product_id": product["id"],
        "stock": stock,
        "price": price,
        "starts_at": now - 60,
        "ends_at": now + 3600,
        "per_user_limit": per_user_limit,
    }
    status, sale = await call(http, "POST", "/api/sales", ADMIN, json=body)
    assert status == 201, sale
    return product["id"], sale["id"]

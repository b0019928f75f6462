"""The shop's HTTP routes: catalogue (products, stock), flash sales, coupons and orders.

They only check the caller and the JSON, call the store, and map its outcomes to status
codes; every rule lives in the store layer. Mutating calls need a token: admin for the
catalogue, sales and coupons, any role for an order."""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web

from mediacore.plugins.api import PluginContext, Role, read_json_object

from . import limits, rules
from .funnel import Funnel
from .metrics import CommerceMetrics
from .model import Completed, InProgress, InvalidRequest, KeyReused, UnknownProduct, UnknownSale
from .store import CommerceStore
from .views import coupon_json, product_json, sale_json
from .web import HttpError, caller, guarded, only, query_int

log = logging.getLogger("mediacore.commerce")

MAX_BODY = 8 * 1024
"""Bytes of a catalogue, sale, coupon or order body: a few fields, even with a long image URL."""

IDEMPOTENCY_HEADER = "Idempotency-Key"

JSON = "application/json"


class ShopRoutes:
    def __init__(
        self, context: PluginContext, store: CommerceStore, funnel: Funnel, metrics: CommerceMetrics, currency: str
    ) -> None:
        self.context = context
        self.store = store
        self.funnel = funnel
        self.metrics = metrics
        self.currency = currency

    def register(self) -> None:
        add = self.context.add_route
        add("POST", "/api/products", guarded(self.create_product))
        add("GET", "/api/products", guarded(self.list_products))
        add("GET", "/api/products/{product_id}", guarded(self.get_product))
        add("PUT", "/api/products/{product_id}/stock", guarded(self.set_stock))
        add("POST", "/api/sales", guarded(self.create_sale))
        add("GET", "/api/sales/{sale_id}", guarded(self.get_sale))
        add("POST", "/api/coupons", guarded(self.create_coupon))
        add("GET", "/api/coupons/{code}", guarded(self.get_coupon))
        add("POST", "/api/orders", guarded(self.create_order))
        add("GET", "/api/orders/{order_id}", guarded(self.get_order))

    # Catalogue ---------------------------------------------------------------------------
    async def create_product(self, request: web.Request) -> web.StreamResponse:
        caller(self.context, request, Role.ADMIN)
        data = only(
            await read_json_object(request, MAX_BODY),
            {"id", "title", "price", "currency", "stock", "image"},
            {"title", "price"},
        )
        product = await self.store.create_product(
            product_id=data.get("id"),
            title=data["title"],
            price=data["price"],
            currency=data.get("currency", self.currency),
            stock=data.get("stock", 0),
            image=data.get("image", ""),
            now=self.context.wall_clock(),
        )
        return web.json_response(product_json(product), status=201)

    async def list_products(self, request: web.Request) -> web.StreamResponse:
        offset = query_int(request, "offset", 0, 0, limits.MAX_STOCK)
        limit = query_int(request, "limit", limits.MAX_PAGE, 1, limits.MAX_PAGE)
        products = await self.store.list_products(offset=offset, limit=limit)
        return web.json_response({"products": [product_json(p) for p in products]})

    async def get_product(self, request: web.Request) -> web.StreamResponse:
        product_id = rules.check_id("product_id", request.match_info["product_id"])
        product = await self.store.get_product(product_id)
        if product is None:
            raise HttpError(404, "unknown_product", f"no product {product_id!r}")
        return web.json_response(product_json(product))

    async def set_stock(self, request: web.Request) -> web.StreamResponse:
        caller(self.context, request, Role.ADMIN)
        data = only(await read_json_object(request, MAX_BODY), {"stock"}, {"stock"})
        product = await self.store.set_stock(request.match_info["product_id"], data["stock"])
        return web.json_response(product_json(product))

    # Sales -------------------------------------------------------------------------------
    async def create_sale(self, request: web.Request) -> web.StreamResponse:
        caller(self.context, request, Role.ADMIN)
        fields = {"product_id", "stock", "price", "starts_at", "ends_at", "per_user_limit"}
        data = only(await read_json_object(request, MAX_BODY), fields, fields - {"starts_at"})
        now = self.context.wall_clock()
        sale = await self.store.create_sale(
            product_id=data["product_id"],
            stock=data["stock"],
            price=data["price"],
            starts_at=data.get("starts_at", now),
            ends_at=data["ends_at"],
            per_user_limit=data["per_user_limit"],
            now=now,
        )
        return web.json_response(sale_json(sale, now), status=201)

    async def get_sale(self, request: web.Request) -> web.StreamResponse:
        sale_id = rules.check_id("sale_id", request.match_info["sale_id"])
        sale = await self.store.get_sale(sale_id)
        if sale is None:
            raise HttpError(404, "unknown_sale", f"no sale {sale_id!r}")
        return web.json_response(sale_json(sale, self.context.wall_clock()))

    # Coupons -----------------------------------------------------------------------------
    async def create_coupon(self, request: web.Request) -> web.StreamResponse:
        caller(self.context, request, Role.ADMIN)
        data = only(
            await read_json_object(request, MAX_BODY),
            {"code", "kind", "value", "expires_at", "max_uses", "once_per_user"},
            {"code", "kind", "value", "expires_at"},
        )
        coupon = await self.store.create_coupon(
            code=data["code"],
            kind=data["kind"],
            value=data["value"],
            expires_at=data["expires_at"],
            max_uses=data.get("max_uses", 1),
            once_per_user=data.get("once_per_user", True),
            now=self.context.wall_clock(),
        )
        return web.json_response(coupon_json(coupon), status=201)

    async def get_coupon(self, request: web.Request) -> web.StreamResponse:
        code = rules.check_coupon_code(request.match_info["code"])
        coupon = await self.store.get_coupon(code)
        if coupon is None:
            raise HttpError(404, "unknown_coupon", f"no coupon {code!r}")
        return web.json_response(coupon_json(coupon))

    # Orders ------------------------------------------------------------------------------
    async def create_order(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        who = caller(self.context, request, Role.VIEWER)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key:
            self.metrics.purchase("invalid")
            raise HttpError(400, "idempotency_key_required", f"send an {IDEMPOTENCY_HEADER} header (a UUID per tap)")
        try:
            rules.check_idempotency_key(key)
            data = only(
                await read_json_object(request, MAX_BODY), {"sale_id", "product_id", "quantity", "coupon", "stream"}
            )
            stream = data.get("stream")
            if stream is not None and (not isinstance(stream, str) or self.context.stream(stream) is None):
                raise HttpError(400, "bad_request", "stream must name a stream of this server")
            result = await self.store.purchase(
                who.sub,
                sale_id=data.get("sale_id"),
                product_id=data.get("product_id"),
                quantity=data.get("quantity", 1),
                coupon=data.get("coupon"),
                idempotency_key=key,
                now=self.context.wall_clock(),
            )
        except (HttpError, InvalidRequest, UnknownProduct, UnknownSale):
            self.metrics.purchase("invalid")
            raise
        if isinstance(result, InProgress):
            self.metrics.purchase("in_progress")
            raise HttpError(
                409,
                "in_progress",
                "a request with this key is still being processed",
                {"Retry-After": str(result.retry_after)},
            )
        if isinstance(result, KeyReused):
            self.metrics.purchase("key_reused")
            raise HttpError(422, "key_reused", "this Idempotency-Key was used for a different request")
        assert isinstance(result, Completed)
        if result.replayed:
            self.metrics.purchase("replayed")
        elif result.order_id is not None:
            self.metrics.purchase("created")
            self._count_order(result.body, stream)
        else:
            self.metrics.purchase(result.error.value if result.error else "refused")
        self.metrics.purchase_seconds.observe(time.perf_counter() - started)
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return web.Response(status=result.status, body=result.body, content_type=JSON, headers=headers)

    def _count_order(self, body: bytes, stream: str | None) -> None:
        try:
            order = json.loads(body)
            self.funnel.order(stream, order["product_id"], self.context.wall_clock())
        except Exception:  # counting must never fail an order that was taken
            log.exception("commerce: counting an order failed")

    async def get_order(self, request: web.Request) -> web.StreamResponse:
        who = caller(self.context, request, Role.VIEWER)
        order_id = rules.check_id("order_id", request.match_info["order_id"])
        order = await self.store.get_order(order_id)
        if order is None or (order.user != who.sub and not who.may(Role.ADMIN)):
            raise HttpError(404, "unknown_order", f"no order {order_id!r}")
        return web.Response(body=rules.order_json(order), content_type=JSON)

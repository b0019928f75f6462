"""`POST /api/events` (what players report: impressions, clicks, add-to-carts of product
cards) and `GET /api/streams/STREAM/stats` (the funnel per product and minute)."""

from __future__ import annotations

from aiohttp import web

from mediacore.plugins.api import PluginContext, Role, read_json_object

from . import rules
from .funnel import Funnel
from .metrics import EVENT_TYPES, CommerceMetrics
from .store import CommerceStore
from .web import HttpError, caller, guarded, only


class Events:
    def __init__(
        self, context: PluginContext, store: CommerceStore, funnel: Funnel, metrics: CommerceMetrics, max_body: int
    ) -> None:
        self.context = context
        self.store = store
        self.funnel = funnel
        self.metrics = metrics
        self.max_body = max_body

    def register(self) -> None:
        self.context.add_route("POST", "/api/events", guarded(self.event))
        # The funnel is fed by /api/events and orders, which the home worker answers: so is this.
        self.context.add_route("GET", "/api/streams/{stream}/stats", guarded(self.stats), machine=True)

    async def event(self, request: web.Request) -> web.StreamResponse:
        """`{"type": "impression" | "click" | "add_to_cart", "stream", "product_id"}` → 204."""
        caller(self.context, request, Role.VIEWER)
        fields = {"type", "stream", "product_id"}
        data = only(await read_json_object(request, self.max_body), fields, fields)
        kind, stream, product_id = data["type"], data["stream"], data["product_id"]
        if kind not in EVENT_TYPES:
            raise HttpError(400, "bad_request", f"type must be one of {', '.join(EVENT_TYPES)}")
        if not isinstance(stream, str) or self.context.stream(stream) is None:
            raise HttpError(404, "unknown_stream", "stream must name a stream of this server")
        if await self.store.get_product(rules.check_id("product_id", product_id)) is None:
            raise HttpError(404, "unknown_product", f"no product {product_id!r}")
        if not self.funnel.record(stream, product_id, kind, self.context.wall_clock()):
            raise HttpError(429, "too_many_products", "the funnel counts no more products now")
        self.metrics.events.labels(kind).inc()
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.StreamResponse:
        """The stream's funnel (host or admin): per product impressions, clicks, add-to-carts,
        orders, CTR and conversion, over the window and per minute."""
        caller(self.context, request, Role.HOST)
        stream = request.match_info["stream"]
        if self.context.stream(stream) is None:
            raise HttpError(404, "unknown_stream", f"no stream {stream!r}")
        return web.json_response(self.funnel.stats(stream, self.context.wall_clock()))

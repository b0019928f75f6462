"""Product cards: a product (and its live flash sale) pinned to a stream as timed metadata,
so every viewer sees the card at the same moment of *their* video.

The card is an EXT-X-DATERANGE of CLASS "com.mediacore.product" (and ID3 / emsg in-band)
with the attributes the watch page reads: X-PRODUCT-ID, X-TITLE, X-PRICE (minor units, the
sale's price while a sale is live), X-CURRENCY, X-IMAGE, X-SALE-ID (only while a sale of
the product is live), at most `limits.MAX_CARD_BYTES` in all."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from mediacore.plugins.api import (
    PRODUCT_CLASS,
    AttributeValue,
    MetadataError,
    PluginContext,
    Role,
    TimedMetadata,
    read_json_object,
)

from . import limits, rules
from .funnel import Funnel
from .metrics import CommerceMetrics
from .model import Product, Sale
from .store import CommerceStore
from .views import sale_state
from .web import HttpError, caller, guarded, only

MAX_BODY = 1024
"""Bytes of a card request: a product id and a duration."""


def _size(attributes: dict[str, AttributeValue]) -> int:
    """Bytes the attributes take in the playlist: `,NAME=VALUE` each, strings quoted."""
    total = 0
    for name, value in attributes.items():
        shown = len(value.encode()) + 2 if isinstance(value, str) else len(repr(value))
        total += 1 + len(name) + 1 + shown
    return total


def _clean(text: str) -> str:
    """A DATERANGE string may hold no double quote and no control character."""
    return "".join(c for c in text.replace('"', "'") if c.isprintable())


def card_attributes(product: Product, sale: Sale | None) -> dict[str, AttributeValue]:
    """The card's attributes, at most MAX_CARD_BYTES: the image URL is left out if it does not
    fit, then the title is shortened."""
    attributes: dict[str, AttributeValue] = {
        "X-PRODUCT-ID": product.id,
        "X-TITLE": _clean(product.title),
        "X-PRICE": sale.price if sale is not None else product.price,
        "X-CURRENCY": product.currency,
    }
    image = _clean(product.image)
    if image:
        attributes["X-IMAGE"] = image
    if sale is not None:
        attributes["X-SALE-ID"] = sale.id
    if _size(attributes) > limits.MAX_CARD_BYTES:
        attributes.pop("X-IMAGE", None)
    title = str(attributes["X-TITLE"])
    while _size(attributes) > limits.MAX_CARD_BYTES and title:
        title = title[:-1]
        attributes["X-TITLE"] = title.rstrip() + "…" if title else ""
    return attributes


def live_sale(sales: list[Sale], now: float) -> Sale | None:
    """The newest sale that sells at `now` and has units left."""
    for sale in reversed(sales):
        if sale_state(sale, now) == "live":
            return sale
    return None


def format_date(epoch: float) -> str:
    """START-DATE as the playlists write it (ISO 8601, milliseconds, UTC)."""
    t = datetime.fromtimestamp(epoch, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class Cards:
    def __init__(
        self,
        context: PluginContext,
        store: CommerceStore,
        funnel: Funnel,
        metrics: CommerceMetrics,
        default_duration: float,
        max_duration: float,
    ) -> None:
        self.context = context
        self.store = store
        self.funnel = funnel
        self.metrics = metrics
        self.default_duration = default_duration
        self.max_duration = max_duration

    def register(self) -> None:
        self.context.add_route("POST", "/api/streams/{stream}/cards", guarded(self.create))

    async def pin(self, stream_name: str, product_id: str, duration: float | None = None) -> TimedMetadata:
        """Pins the product's card on the stream now (HttpError 404 / 409 / 422)."""
        stream = self.context.stream(stream_name)
        if stream is None:
            raise HttpError(404, "unknown_stream", f"no stream {stream_name!r}")
        product = await self.store.get_product(rules.check_id("product_id", product_id))
        if product is None:
            raise HttpError(404, "unknown_product", f"no product {product_id!r}")
        if not stream.publishing:
            raise HttpError(409, "not_live", f"stream {stream_name!r} is not live")
        sale = live_sale(await self.store.sales_of(product.id), self.context.wall_clock())
        attributes = card_attributes(product, sale)
        try:
            card = stream.add_metadata(
                attributes, duration=duration if duration is not None else self.default_duration, cls=PRODUCT_CLASS
            )
        except MetadataError as e:
            raise HttpError(422, "card_refused", str(e)) from None
        self.metrics.cards.inc()
        self.funnel.card_shown(stream_name, product.id)
        return card

    async def create(self, request: web.Request) -> web.StreamResponse:
        caller(self.context, request, Role.HOST)
        data = only(await read_json_object(request, MAX_BODY), {"product_id", "duration"}, {"product_id"})
        duration = data.get("duration")
        if duration is not None and (
            isinstance(duration, bool) or not isinstance(duration, int | float) or not 0 < duration <= self.max_duration
        ):
            raise HttpError(400, "bad_request", f"duration must be a number of seconds in (0, {self.max_duration:g}]")
        card = await self.pin(request.match_info["stream"], data["product_id"], duration)
        body = {
            "id": card.id,
            "start_date": format_date(card.date),
            "start": card.date,
            "duration": card.duration,
            "attributes": dict(card.attributes),
        }
        return web.json_response(body, status=201)

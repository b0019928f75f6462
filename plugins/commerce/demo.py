"""The demo shop (`[commerce] demo = true`, which `mediacore demo` sets): a small catalogue
and a flash sale seeded into the store on first run, and a product card pinned on the demo
stream every `demo_card_interval` seconds, so a person can shop with no setup.

Seeding is idempotent (fixed product ids; a sale is created only when the demo product has
none that is live or scheduled). The card task only calls `add_metadata`, skips while the
stream is not live, and logs and goes on after any failure: the media path never waits
for it."""

from __future__ import annotations

import asyncio
import logging

from .cards import Cards
from .model import AlreadyExists
from .store import CommerceStore
from .views import sale_state
from .web import HttpError

log = logging.getLogger("mediacore.commerce.demo")

CATALOGUE = (
    ("demo-lamp", "Desk lamp, brass", 4900, 50),
    ("demo-mug", "Stoneware mug", 1499, 500),
    ("demo-tee", "Organic cotton T-shirt", 2499, 300),
)
"""(id, title, price in cents, stock) of the demo products, in EUR."""
SALE_PRODUCT = "demo-lamp"
SALE_STOCK = 100
SALE_PRICE = 2900
SALE_PER_USER_LIMIT = 2
SALE_HOURS = 24


async def seed(store: CommerceStore, now: float) -> str | None:
    """Creates what is missing; returns the id of the demo's live (or scheduled) sale."""
    for product_id, title, price, stock in CATALOGUE:
        try:
            await store.create_product(
                product_id=product_id, title=title, price=price, currency="EUR", stock=stock, now=now
            )
        except AlreadyExists:
            pass
    for sale in reversed(await store.sales_of(SALE_PRODUCT)):
        if sale_state(sale, now) in ("live", "scheduled"):
            return sale.id
    sale = await store.create_sale(
        product_id=SALE_PRODUCT,
        stock=SALE_STOCK,
        price=SALE_PRICE,
        starts_at=now,
        ends_at=now + SALE_HOURS * 3600,
        per_user_limit=SALE_PER_USER_LIMIT,
        now=now,
    )
    log.info("demo shop: flash sale %s of %d units of %s", sale.id, SALE_STOCK, SALE_PRODUCT)
    return sale.id


async def pin_cards(cards: Cards, stream: str, interval: float) -> None:
    """Pins the next demo product's card on `stream` every `interval` seconds while it is live."""
    turn = 0
    while True:
        await asyncio.sleep(interval)
        handle = cards.context.stream(stream)
        if handle is None or not handle.publishing:
            continue
        product_id = CATALOGUE[turn % len(CATALOGUE)][0]
        turn += 1
        try:
            card = await cards.pin(stream, product_id, interval)
            log.debug("demo shop: card %s for %s on %s", card.id, product_id, stream)
        except HttpError as e:
            log.info("demo shop: no card for %s: %s", product_id, e.detail or e.code)
        except Exception:
            log.exception("demo shop: pinning a card failed")

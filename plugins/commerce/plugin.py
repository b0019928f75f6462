"""The commerce plugin: the shop's HTTP routes, product cards, funnel counters, the order
webhook and the demo shop, on the plugin API and the store layer of this package.

`[commerce]` configures it (settings.py). Without `redis_url` the store is the embedded
SQLite file `commerce.db` in the plugin's data directory; with it, Redis shared by every
node. The webhook deliverer and the demo's card task are tasks the plugin owns: started in
`start()`, cancelled in `stop()`."""

from __future__ import annotations

import asyncio
import logging

from mediacore.plugins.api import PluginContext, PluginError, cancel_and_wait

from . import demo
from .cards import Cards
from .events import Events
from .funnel import Funnel
from .metrics import CommerceMetrics
from .outbox import OutboxDeliverer, WebhookConfig
from .redis_store import RedisCommerceStore
from .routes import ShopRoutes
from .settings import CommerceSettings
from .sqlite_store import SqliteCommerceStore
from .store import CommerceStore

log = logging.getLogger("mediacore.commerce")

SQLITE_FILE = "commerce.db"
PURGE_INTERVAL = 3600.0
"""Seconds between deletions of expired idempotency records from SQLite (Redis expires its own)."""


class CommercePlugin:
    name = "commerce"

    def __init__(self) -> None:
        self.settings = CommerceSettings()
        self.store: CommerceStore | None = None
        self.deliverer: OutboxDeliverer | None = None
        self.cards: Cards | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, context: PluginContext) -> None:
        self.settings = settings = CommerceSettings.parse(context.settings)
        self.store = store = await self._open_store(context, settings)
        metrics = CommerceMetrics(context.registry)
        funnel = Funnel(settings.stats_minutes, settings.max_stats_products)
        ShopRoutes(context, store, funnel, metrics, settings.currency).register()
        self.cards = Cards(context, store, funnel, metrics, settings.card_duration, settings.max_card_duration)
        self.cards.register()
        Events(context, store, funnel, metrics, settings.max_event_body).register()
        loop = asyncio.get_running_loop()
        if settings.order_webhook and settings.webhook_deliverer:
            webhook = WebhookConfig(
                url=settings.order_webhook,
                initial_backoff=settings.webhook_initial_backoff,
                max_backoff=settings.webhook_max_backoff,
                request_timeout=settings.webhook_timeout,
                poll_interval=min(1.0, settings.webhook_initial_backoff),
            )
            self.deliverer = OutboxDeliverer(store, webhook)
            deliverer = self.deliverer
            metrics.watch_webhook(lambda: deliverer.delivered, lambda: deliverer.failed_attempts)
            self.deliverer.start()
        if isinstance(store, SqliteCommerceStore):
            self._tasks.append(loop.create_task(self._purge(store, context), name="commerce-purge"))
        if settings.demo:
            await demo.seed(store, context.wall_clock())
            pin = demo.pin_cards(self.cards, settings.demo_stream, settings.demo_card_interval)
            self._tasks.append(loop.create_task(pin, name="commerce-demo-cards"))
        log.info(
            "commerce: %s store, order webhook %s%s",
            "Redis" if settings.redis_url else f"SQLite in {context.data_dir}",
            settings.order_webhook or "off",
            ", demo shop on " + settings.demo_stream if settings.demo else "",
        )

    @staticmethod
    async def _open_store(context: PluginContext, settings: CommerceSettings) -> CommerceStore:
        if settings.redis_url:
            store = RedisCommerceStore.from_url(settings.redis_url, prefix=settings.key_prefix)
            try:
                await store.client.ping()
            except Exception as e:
                await store.close()
                raise PluginError(f"commerce: Redis at commerce.redis_url does not answer: {e}") from e
            return store
        path = context.data_dir / SQLITE_FILE
        try:
            return await SqliteCommerceStore.open(path, synchronous=settings.sqlite_synchronous)
        except Exception as e:
            raise PluginError(f"commerce: cannot open {path}: {e}") from e

    @staticmethod
    async def _purge(store: SqliteCommerceStore, context: PluginContext) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                await store.purge_expired(context.wall_clock())
            except Exception:
                log.exception("commerce: purging expired idempotency records failed")

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        if self.deliverer is not None:
            await self.deliverer.stop()
            self.deliverer = None
        if self.store is not None:
            await self.store.close()
            self.store = None

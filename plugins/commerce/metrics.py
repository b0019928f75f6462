"""The shop's Prometheus metrics, on the engine's registry (the admin listener's /metrics).
Every label value comes from a fixed set, so no request can add a time series."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .model import Refusal

PURCHASE_OUTCOMES = frozenset(
    {"created", "replayed", "in_progress", "key_reused", "invalid", "refused", *(r.value for r in Refusal)}
)
EVENT_TYPES = ("impression", "click", "add_to_cart")


class CommerceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.purchases = Counter(
            "mediacore_commerce_purchases",
            "Purchase attempts by outcome (created, a refusal reason, replayed, in_progress, key_reused, invalid)",
            ["outcome"],
            registry=registry,
        )
        self.purchase_seconds = Histogram(
            "mediacore_commerce_purchase_seconds",
            "Seconds from a purchase request's arrival to its answer (well-formed requests)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.events = Counter(
            "mediacore_commerce_events", "Funnel events accepted by type", ["type"], registry=registry
        )
        self.cards = Counter("mediacore_commerce_cards", "Product cards pinned to streams", registry=registry)
        self.webhook_delivered = Gauge(
            "mediacore_commerce_webhook_delivered",
            "Orders the webhook receiver accepted since start",
            registry=registry,
        )
        self.webhook_failures = Gauge(
            "mediacore_commerce_webhook_failed_attempts",
            "Webhook POSTs that failed (retried later) since start",
            registry=registry,
        )

    def purchase(self, outcome: str) -> None:
        self.purchases.labels(outcome if outcome in PURCHASE_OUTCOMES else "refused").inc()

    def watch_webhook(self, delivered: Callable[[], float], failed: Callable[[], float]) -> None:
        self.webhook_delivered.set_function(delivered)
        self.webhook_failures.set_function(failed)

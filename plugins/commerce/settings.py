"""The `[commerce]` section: every setting with its default and the reason for it, checked
once at start-up (a bad value refuses the engine's start with a PluginError naming it)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mediacore.plugins.api import PluginError

_PREFIX = re.compile(r"[\x21-\x7e]{1,64}")
_STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")


@dataclass(slots=True)
class CommerceSettings:
    redis_url: str = ""
    """Redis holding the shop's state for several nodes (redis:// or rediss://, or
    unix://). Empty: the embedded SQLite file `commerce.db` under `[server] data_dir`/commerce."""
    key_prefix: str = "mediacore:commerce:"
    """Prefix of every Redis key: several shops can share one Redis; for Redis Cluster give
    it a hash tag (`{commerce}:`) so the purchase script's keys share a slot."""
    sqlite_synchronous: str = "FULL"
    """SQLite's `synchronous`: FULL makes every committed order survive a power loss; NORMAL
    (still safe against a crash of the process) saves an fsync per order."""
    order_webhook: str = ""
    """URL (http or https) that receives every order as JSON, at least once, with
    `Idempotency-Key: ORDER_ID`. Empty: orders stay in the store only."""
    webhook_deliverer: bool = True
    """Run the webhook deliverer on this node. With Redis, turn it off on all but one node:
    two deliverers would both POST the same orders (harmless to an idempotent receiver, but
    twice the traffic)."""
    webhook_initial_backoff: float = 1.0
    """Seconds before the first retry of an order the receiver did not take; doubled after
    every failure."""
    webhook_max_backoff: float = 300.0
    """Cap of that backoff, seconds: after an outage every order arrives within it."""
    webhook_timeout: float = 10.0
    """Seconds one webhook POST may take before it counts as failed."""
    currency: str = "EUR"
    """ISO 4217 currency of a product created without one."""
    card_duration: float = 30.0
    """Seconds a product card lasts (its DATERANGE DURATION) when the call names none."""
    max_card_duration: float = 3600.0
    """Longest card accepted, seconds: a card that outlives the show is a mistake."""
    stats_minutes: int = 60
    """Minutes of funnel counters kept per stream and product for `/stats` (in memory, per node)."""
    max_stats_products: int = 10_000
    """(stream, product) pairs counted at once: events for more are refused (429) so a flood
    of made-up ids cannot grow memory; real catalogues on air are far smaller."""
    max_event_body: int = 4096
    """Bytes of one `POST /api/events` body: an event is a few names, far below it."""
    demo: bool = False
    """Seed a small catalogue and a flash sale, and pin a product card on `demo_stream` every
    `demo_card_interval` seconds (`mediacore demo` turns it on)."""
    demo_stream: str = "demo"
    """The stream the demo's cards go to (`mediacore demo` sets `[demo] stream`)."""
    demo_card_interval: float = 20.0
    """Seconds between the demo's product cards."""

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> CommerceSettings:
        """The settings from `[commerce]` (unknown keys, wrong types and out-of-range values
        are refused with a PluginError naming the key)."""
        settings = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise PluginError(f"unknown setting commerce.{key} (known: {', '.join(sorted(known))})")
            current = getattr(settings, key)
            if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, type(current)):
                raise PluginError(f"commerce.{key} must be {type(current).__name__}, not {type(value).__name__}")
            setattr(settings, key, value)
        settings.check()
        return settings

    def check(self) -> None:
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise PluginError("commerce.redis_url must be a redis://, rediss:// or unix:// URL (or empty)")
        if not _PREFIX.fullmatch(self.key_prefix):
            raise PluginError("commerce.key_prefix must be 1 to 64 printable ASCII characters without spaces")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise PluginError("commerce.currency must be an ISO 4217 code such as 'EUR'")
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise PluginError("commerce.sqlite_synchronous must be FULL or NORMAL")
        if self.order_webhook:
            url = urlsplit(self.order_webhook)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise PluginError("commerce.order_webhook must be an http:// or https:// URL (or empty)")
        for key, low, high in (
            ("webhook_initial_backoff", 0.01, 3600.0),
            ("webhook_max_backoff", 0.01, 86400.0),
            ("webhook_timeout", 0.1, 300.0),
            ("card_duration", 0.1, 86400.0),
            ("max_card_duration", 0.1, 86400.0),
            ("demo_card_interval", 1.0, 3600.0),
        ):
            value = getattr(self, key)
            if not (math.isfinite(value) and low <= value <= high):
                raise PluginError(f"commerce.{key} must be between {low:g} and {high:g} seconds, not {value:g}")
        if self.webhook_max_backoff < self.webhook_initial_backoff:
            raise PluginError("commerce.webhook_max_backoff must not be below webhook_initial_backoff")
        if self.card_duration > self.max_card_duration:
            raise PluginError("commerce.card_duration must not exceed max_card_duration")
        for key, low, high in (
            ("stats_minutes", 1, 1440),
            ("max_stats_products", 1, 1_000_000),
            ("max_event_body", 256, 65536),
        ):
            value = getattr(self, key)
            if not low <= value <= high:
                raise PluginError(f"commerce.{key} must be between {low} and {high}, not {value}")
        if not _STREAM.fullmatch(self.demo_stream):
            raise PluginError("commerce.demo_stream must be a stream name (letters, digits, '_', '-')")

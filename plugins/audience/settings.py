"""The `[audience]` section: every setting with its default and the reason for it, checked at
start-up (a bad value refuses the engine's start with a PluginError naming it)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mediacore.plugins.api import PluginError

from .cf import METHODS

RANKINGS = ("purchase", "cf")
_PREFIX = re.compile(r"[\x21-\x7e]{1,64}")


@dataclass(slots=True)
class AudienceSettings:
    redis_url: str = ""
    """Redis whose Stream collects every node's events (redis://, rediss:// or unix://).
    Empty: the embedded SQLite file `audience.db` under `[server] data_dir`/audience."""
    key_prefix: str = "mediacore:audience:"
    """Prefix of every Redis key (a hash tag such as `{audience}:` for Redis Cluster)."""
    node_id: str = ""
    """This node's consumer name in the Redis consumer group; empty: the host name. Two live
    nodes must differ; a restarted node keeps its name to take back its pending events."""
    user_key: str = ""
    """Secret (at least 16 characters) under which JWT subjects become pseudonymous user ids.
    Empty: a random key kept in the data directory (one node); required with redis_url, so
    every node names a user alike."""
    retention_days: float = 30.0
    """Days events are kept; older ones are deleted from the store and the models hourly."""
    queue_size: int = 100_000
    """Events waiting for the store at most; beyond it new events are dropped and counted
    (mediacore_audience_events_dropped): the media and request paths never wait."""
    batch_size: int = 500
    """Events written per store transaction / pipeline."""
    update_interval: float = 1.0
    """Seconds between model refreshes (only when events arrived): an event shows in the
    recommendations within about this plus the refresh's own time."""
    method: str = "blend"
    """Collaborative filter serving recommendations: item, user, or blend (both, each scaled)."""
    max_body: int = 65536
    """Bytes of one `POST /api/audience/events` body."""
    model_interval: float = 300.0
    """Seconds between retrains of the CTR / conversion models, the K-means segments, the basket
    rules and the coupon uptake curves (a worker thread, from the stored events of the
    retention window); the first runs at start."""
    rank_products: str = "purchase"
    """Order of product recommendations: purchase (the collaborative filter's candidates by
    predicted P(purchase)) or cf (the filter's own score); both report p_click, p_purchase."""
    uptake_per_percent: float = 0.01
    """The proportional uptake model of the promotion planner, for a segment without coupon
    history: uptake = min(1, this × percent off)."""

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> AudienceSettings:
        settings = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise PluginError(f"unknown setting audience.{key} (known: {', '.join(sorted(known))})")
            current = getattr(settings, key)
            if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, type(current)):
                raise PluginError(f"audience.{key} must be {type(current).__name__}, not {type(value).__name__}")
            setattr(settings, key, value)
        settings.check()
        return settings

    def check(self) -> None:
        if self.redis_url and urlsplit(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise PluginError("audience.redis_url must be a redis://, rediss:// or unix:// URL (or empty)")
        if not _PREFIX.fullmatch(self.key_prefix):
            raise PluginError("audience.key_prefix must be 1 to 64 printable ASCII characters without spaces")
        if self.node_id and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.node_id):
            raise PluginError("audience.node_id must be 1 to 64 characters of [A-Za-z0-9_.-]")
        if self.user_key and len(self.user_key) < 16:
            raise PluginError("audience.user_key must have at least 16 characters")
        if self.redis_url and not self.user_key:
            raise PluginError("audience.user_key is required with redis_url (every node must pseudonymise alike)")
        if self.rank_products not in RANKINGS:
            raise PluginError(f"audience.rank_products must be one of {', '.join(RANKINGS)}")
        if self.method not in METHODS:
            raise PluginError(f"audience.method must be one of {', '.join(METHODS)}")
        for key, low, high in (
            ("retention_days", 0.01, 3650.0),
            ("update_interval", 0.05, 3600.0),
            ("model_interval", 0.1, 86400.0),
            ("uptake_per_percent", 0.0, 1.0),
        ):
            value = getattr(self, key)
            if not (math.isfinite(value) and low <= value <= high):
                raise PluginError(f"audience.{key} must be between {low:g} and {high:g}, not {value:g}")
        for key, ilow, ihigh in (("queue_size", 1, 10_000_000), ("batch_size", 1, 10_000), ("max_body", 256, 1 << 20)):
            value = getattr(self, key)
            if not ilow <= value <= ihigh:
                raise PluginError(f"audience.{key} must be between {ilow} and {ihigh}, not {value}")

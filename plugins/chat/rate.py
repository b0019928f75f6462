"""Rate limits, sans I/O, time passed in: a token bucket (per user; slow mode is a bucket of
one) and duplicate suppression. The Redis bus runs the same bucket arithmetic in Lua, so the
limit holds across nodes (plugins/chat/redis_bus.py); the tests drive these with a fake clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from . import limits

EPSILON = 1e-9
"""Tokens that count as whole: refilling in many small steps (0.1 + 0.1 + ...) falls short of
1.0 by rounding, which must not refuse a message that is due."""


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float


def take(bucket: Bucket | None, now: float, capacity: int, period: float) -> tuple[Bucket, float]:
    """Spend one token of a bucket holding at most `capacity` that refills `capacity` tokens
    per `period` seconds. Returns the bucket after the call and 0.0 when the token was
    spent, or the seconds until one will be there (nothing spent)."""
    rate = capacity / period
    if bucket is None:
        bucket = Bucket(float(capacity), now)
    tokens = min(float(capacity), bucket.tokens + max(0.0, now - bucket.updated) * rate)
    if tokens >= 1.0 - EPSILON:
        return Bucket(max(0.0, tokens - 1.0), now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / rate


class Buckets:
    """Token buckets by key, in one process (the in-process bus's limits). Keys idle long
    enough to be full again are forgotten when the table grows past `max_keys`."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: OrderedDict[str, tuple[Bucket, float]] = OrderedDict()
        self.max_keys = max_keys

    def take(self, key: str, now: float, capacity: int, period: float) -> float:
        entry = self._buckets.pop(key, None)
        bucket, retry = take(entry[0] if entry else None, now, capacity, period)
        self._buckets[key] = (bucket, now + period)
        while len(self._buckets) > self.max_keys:
            _, (_, full_at) = next(iter(self._buckets.items()))
            if full_at > now:
                break
            self._buckets.popitem(last=False)
        return retry


class Duplicates:
    """Refuses the same text from the same user again within `window` seconds (per node: a
    user's connections to one room usually share a node; see docs/chat.md)."""

    def __init__(self, window: float, max_users: int = 100_000) -> None:
        self.window = window
        self.max_users = max_users
        self._recent: OrderedDict[str, deque[tuple[str, float]]] = OrderedDict()

    def seen(self, user: str, text: str, now: float) -> bool:
        """Whether `text` repeats one of `user`'s recent messages; records it if not."""
        if self.window <= 0:
            return False
        key = " ".join(text.casefold().split())
        recent = self._recent.pop(user, None) or deque(maxlen=limits.DUPLICATE_MEMORY)
        self._recent[user] = recent
        while recent and now - recent[0][1] >= self.window:
            recent.popleft()
        if any(old == key for old, _ in recent):
            return True
        recent.append((key, now))
        while len(self._recent) > self.max_users:
            self._recent.popitem(last=False)
        return False

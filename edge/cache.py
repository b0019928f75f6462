"""A byte-bounded LRU cache of HTTP responses (lru-dict underneath) with HTTP freshness.

Entries are immutable responses with the time they were stored and their max-age from the
upstream's Cache-Control; `Age` is derived from that (HLS-RULES 1c: caches set Age, players
use it). Stale entries stay until evicted so they can serve when the upstream fails
(stale-if-error). Time (`now`, monotonic seconds) is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import lru

MAX_AGE = re.compile(r"max-age=(\d+)")
ENTRY_OVERHEAD = 200
"""Bytes charged per entry beyond body and headers: the key, the entry object and its LRU node, roughly."""


@dataclass(frozen=True, slots=True)
class CachedResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    stored_at: float
    max_age: float
    upstream_age: float = 0.0
    gzip_body: bytes | None = None
    """The body gzip-compressed once when stored (playlists), for clients that accept it."""
    rendered: dict[str, tuple[bytes, bytes]] = field(default_factory=dict, compare=False, repr=False)
    """Accept-Encoding -> status line and headers, and body, rendered by the fast path
    (`edge.fastpath`) at the first answer to a request with that header, reused by later ones."""

    def age(self, now: float) -> float:
        return self.upstream_age + max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return self.age(now) < self.max_age

    @property
    def size(self) -> int:
        bodies = len(self.body) + len(self.gzip_body or b"")
        return bodies + sum(len(k) + len(v) for k, v in self.headers) + ENTRY_OVERHEAD


def max_age_of(cache_control: str) -> float | None:
    """Seconds a response may be reused, or None if it must not be stored."""
    if forbids_storing(cache_control):
        return None
    lowered = cache_control.lower()
    if "no-cache" in lowered:
        return 0.0
    match = MAX_AGE.search(lowered)
    return float(match.group(1)) if match else None


def forbids_storing(cache_control: str) -> bool:
    """The upstream said this response must not be kept by a shared cache."""
    lowered = cache_control.lower()
    return "no-store" in lowered or "private" in lowered


def age_of(header: str) -> float:
    """The upstream's `Age` in seconds (0 when absent or malformed), so tiers add up ages."""
    try:
        return max(0.0, float(header or "0"))
    except ValueError:
        return 0.0


class ResponseCache:
    """Bounded by bytes. lru-dict needs a count bound too; it is set to the most entries the byte
    budget can hold (each costs at least ENTRY_OVERHEAD), so it never evicts behind the byte tally."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: lru.LRU = lru.LRU(max(1, max_bytes // ENTRY_OVERHEAD))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedResponse | None:
        return self._entries.get(key)

    def put(self, key: str, entry: CachedResponse) -> None:
        if entry.size > self.max_bytes:
            return
        old = self._entries.get(key)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes and len(self._entries):
            _, evicted = self._entries.popitem(least_recent=True)
            self.bytes -= evicted.size
            self.evictions += 1

"""When the edge may answer from its cache: pure decisions on (path, entry, now, config).

No sockets and no clock: the server passes `now` (monotonic seconds from its injected clock),
so every freshness and stale-if-error rule here is testable by choosing numbers, not by waiting.
"""

from __future__ import annotations

from edge.cache import CachedResponse, max_age_of
from edge.config import EdgeConfig

NOT_STORABLE = -1.0
"""The max-age given to a response that must not be stored (no-store, private or no max-age)."""
STORED_STATUSES = (200, 404)
"""Statuses worth keeping: media and playlists, and 404s so a stampede on a missing name is one request."""
PLAYLIST_SUFFIX = ".m3u8"
"""Playlists are rewritten under one name every part or segment; media objects never change."""


def is_playlist(path: str) -> bool:
    """Whether the path names a playlist: the one kind of object that changes under its name."""
    return path.endswith(PLAYLIST_SUFFIX)


def max_age_for(status: int, cache_control: str, config: EdgeConfig) -> float:
    """Seconds this upstream response may be reused. A 404 is kept at most `negative_ttl`
    (and at least that, whatever it says) so a name published a moment later shows up soon."""
    max_age = max_age_of(cache_control)
    if status == 404:
        max_age = min(max_age or config.negative_ttl, config.negative_ttl)
    return max_age if max_age is not None else NOT_STORABLE


def storable(entry: CachedResponse) -> bool:
    """Whether a fetched response goes into the cache."""
    return entry.max_age > 0 and entry.status in STORED_STATUSES


def serve_fresh(entry: CachedResponse, now: float) -> bool:
    """A stored response within its max-age is answered without asking the upstream."""
    return entry.fresh(now)


def may_serve_stale(path: str, entry: CachedResponse, now: float, config: EdgeConfig) -> bool:
    """After an upstream failure: media (segments, parts, init segments) never changes, so any
    cached copy is right; a playlist is served only while younger than `stale_playlist_seconds`,
    after which a clear 502 beats a live stream silently frozen. Cached 404s are never stretched."""
    if entry.status != 200:
        return False
    if is_playlist(path):
        return now - entry.stored_at <= config.stale_playlist_seconds
    return True

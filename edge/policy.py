"""When the edge may answer from its cache: pure decisions on (path, entry, now, config).

No sockets and no clock: the server passes `now` (monotonic seconds from its injected clock),
so every freshness and stale-if-error rule here is testable by choosing numbers, not by waiting.
"""

from __future__ import annotations

from edge.cache import CachedResponse, forbids_storing, max_age_of
from edge.config import EdgeConfig

NOT_STORABLE = -1.0
"""The max-age given to a response that must not be stored (no-store, private or no max-age)."""
STORED_STATUSES = (200, 404)
"""Statuses worth keeping: media and playlists, and 404s so a stampede on a missing name is one request."""
PLAYLIST_SUFFIX = ".m3u8"
"""Playlists are rewritten under one name every part or segment; media objects never change."""
MEDIA_SUFFIXES = (".ts", ".m4s", ".mp4")
"""HLS segments, LL-HLS parts and parents, init segments: the names whose 404s are kept
`media_negative_ttl` at most, as a part may be published a part target later."""
NO_STORE = "no-store"
"""Cache-Control of a 404 for a segment or part not published yet: true only until it is."""
RETRY_AFTER_SECONDS = 1
"""Retry-After of a refused blocked request: by then the client's requests in flight have been
answered (a part target or so) or it has reloaded the playlist anyway."""


def is_playlist(path: str) -> bool:
    """Whether the path names a playlist: the one kind of object that changes under its name."""
    return path.endswith(PLAYLIST_SUFFIX)


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether a request's Accept-Encoding takes gzip (RFC 9110 12.5.3): gzip listed without
    `q=0`, or, when gzip is not listed, `*` without `q=0`."""
    wildcard = False
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        q = params.replace(" ", "").lower()
        accepted = not (q.startswith("q=") and q[2:].rstrip("0").rstrip(".") in ("0", ""))
        if coding in ("gzip", "x-gzip"):
            return accepted
        if coding == "*":
            wildcard = accepted
    return wildcard


def is_media(path: str) -> bool:
    """Whether the path names a segment, part or init segment."""
    return path.endswith(MEDIA_SUFFIXES)


def negative_ttl(path: str, config: EdgeConfig) -> float:
    """The longest a 404 for `path` is reused: `negative_ttl`, and for media never more than
    `media_negative_ttl` (a future part's 404 must not outlive the time until it exists)."""
    if is_media(path):
        return min(config.negative_ttl, config.media_negative_ttl)
    return config.negative_ttl


def max_age_for(status: int, cache_control: str, config: EdgeConfig, path: str = "", in_future: bool = False) -> float:
    """Seconds this upstream response may be reused. A 404 is kept at most `negative_ttl(path)`
    (and that long when the upstream gives no max-age or 0), so a name published a moment later
    shows up soon; never when the upstream says no-store, nor when it names a segment or part
    still in the future (`in_future`, from `edge.frontier`)."""
    max_age = max_age_of(cache_control)
    if status == 404:
        if in_future or forbids_storing(cache_control):
            return NOT_STORABLE
        bound = negative_ttl(path, config)
        return min(max_age or bound, bound)
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


def blocked_upstream_limit(config: EdgeConfig) -> int:
    """Distinct blocked requests in flight to the upstream: `max_blocked_upstream`, never more
    than half the upstream connections (and at least one)."""
    return max(1, min(config.max_blocked_upstream, config.max_connections // 2))

"""Edge cache pieces and cache policy without sockets or clocks: time is a number passed in."""

from edge import policy
from edge.cache import ENTRY_OVERHEAD, CachedResponse, ResponseCache, age_of, max_age_of
from edge.config import EdgeConfig

CONFIG = EdgeConfig(upstreams=["http://upstream"], negative_ttl=1.0, stale_playlist_seconds=4.0)


def entry(status: int = 200, stored_at: float = 0.0, max_age: float = 1.0) -> CachedResponse:
    return CachedResponse(status, b"body", (), stored_at, max_age)


def test_cache_is_bounded_by_bytes_and_keeps_lru_order():
    cache = ResponseCache(max_bytes=10_000)
    for i in range(10):
        cache.put(f"k{i}", CachedResponse(200, b"x" * 2000, (), 0.0, 60.0))
    assert cache.bytes <= 10_000 and cache.evictions >= 5
    assert cache.get("k9") is not None and cache.get("k0") is None


def test_the_byte_budget_binds_before_the_entry_count():
    """Empty bodies cost ENTRY_OVERHEAD each; the byte tally must still match what is held."""
    cache = ResponseCache(max_bytes=10 * ENTRY_OVERHEAD)
    for i in range(50):
        cache.put(f"k{i}", entry())
    assert len(cache) * entry().size == cache.bytes <= cache.max_bytes
    assert cache.evictions == 50 - len(cache)


def test_max_age_parsing():
    assert max_age_of("public, max-age=6") == 6.0
    assert max_age_of("no-cache") == 0.0
    assert max_age_of("no-store") is None
    cached = CachedResponse(200, b"", (), stored_at=10.0, max_age=2.0, upstream_age=1.0)
    assert cached.age(10.5) == 1.5 and cached.fresh(10.5) and not cached.fresh(11.5)


def test_upstream_age_header():
    assert age_of("3") == 3.0 and age_of("") == 0.0 and age_of("soon") == 0.0 and age_of("-5") == 0.0


def test_max_age_and_negative_ttl():
    assert policy.max_age_for(200, "max-age=6", CONFIG) == 6.0
    assert policy.max_age_for(200, "no-store", CONFIG) == policy.NOT_STORABLE
    assert policy.max_age_for(200, "", CONFIG) == policy.NOT_STORABLE
    # 404s: never longer than negative_ttl, and kept that long even when the upstream says nothing
    assert policy.max_age_for(404, "max-age=60", CONFIG) == 1.0
    assert policy.max_age_for(404, "", CONFIG) == 1.0
    assert policy.max_age_for(404, "max-age=0", CONFIG) == 1.0


def test_what_is_stored():
    assert policy.storable(entry(200, max_age=1.0)) and policy.storable(entry(404, max_age=1.0))
    assert not policy.storable(entry(200, max_age=policy.NOT_STORABLE))
    assert not policy.storable(entry(200, max_age=0.0))  # no-cache
    assert not policy.storable(entry(403, max_age=60.0))


def test_fresh_within_max_age_only():
    cached = entry(stored_at=100.0, max_age=1.0)
    assert policy.serve_fresh(cached, 100.0) and policy.serve_fresh(cached, 100.99)
    assert not policy.serve_fresh(cached, 101.0)


def test_stale_playlist_window_and_media_forever():
    playlist = "/live/s/index.m3u8"
    cached = entry(stored_at=100.0, max_age=1.0)
    assert policy.may_serve_stale(playlist, cached, 101.5, CONFIG)
    assert policy.may_serve_stale(playlist, cached, 104.0, CONFIG)  # the window's edge is still inside
    assert not policy.may_serve_stale(playlist, cached, 104.01, CONFIG)
    assert policy.may_serve_stale("/live/s/seg7.ts", cached, 100_000.0, CONFIG)
    assert policy.may_serve_stale("/live/s/ll/p7.1.m4s", cached, 100_000.0, CONFIG)


def test_cached_404_is_never_served_stale():
    gone = entry(404, stored_at=100.0, max_age=1.0)
    assert not policy.may_serve_stale("/live/s/seg9.ts", gone, 101.5, CONFIG)
    assert not policy.may_serve_stale("/live/s/index.m3u8", gone, 100.5, CONFIG)

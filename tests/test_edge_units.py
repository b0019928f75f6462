"""Edge cache pieces without sockets."""

from edge.cache import CachedResponse, ResponseCache, max_age_of


def test_cache_is_bounded_by_bytes_and_keeps_lru_order():
    cache = ResponseCache(max_bytes=10_000)
    for i in range(10):
        cache.put(f"k{i}", CachedResponse(200, b"x" * 2000, (), 0.0, 60.0))
    assert cache.bytes <= 10_000 and cache.evictions >= 5
    assert cache.get("k9") is not None and cache.get("k0") is None


def test_max_age_parsing():
    assert max_age_of("public, max-age=6") == 6.0
    assert max_age_of("no-cache") == 0.0
    assert max_age_of("no-store") is None
    entry = CachedResponse(200, b"", (), stored_at=10.0, max_age=2.0, upstream_age=1.0)
    assert entry.age(10.5) == 1.5 and entry.fresh(10.5) and not entry.fresh(11.5)

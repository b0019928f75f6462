"""Edge cache pieces and cache policy without sockets or clocks: time is a number passed in."""

import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import keys, limits, policy, workers
from edge.cache import ENTRY_OVERHEAD, CachedResponse, ResponseCache, age_of, max_age_of
from edge.config import EdgeConfig
from edge.frontier import Frontiers, media_name, playlist_frontier

GOLDEN = Path(__file__).parent / "data" / "golden"

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


# Negative caching: media 404s under a part target, future ones not at all -----------------

PART = "/live/s/ll/v-abc-5.4.m4s"


def test_media_404s_are_kept_under_a_part_target():
    # the origin says max-age=TD on a part's 404; the edge keeps it 0.2 s at most, not negative_ttl
    assert CONFIG.media_negative_ttl == 0.2 < 0.22  # under the default PART-TARGET
    for path in (PART, "/live/s/abc-7.ts", "/live/s/ll/v-abc-5.m4s", "/live/s/ll/v-init-abc-0.mp4"):
        assert policy.max_age_for(404, "max-age=2", CONFIG, path) == 0.2
        assert policy.max_age_for(404, "", CONFIG, path) == 0.2
    assert policy.max_age_for(404, "max-age=2", EdgeConfig(negative_ttl=0.1), PART) == 0.1  # never above negative_ttl
    # everything else keeps negative_ttl
    assert policy.max_age_for(404, "max-age=2", CONFIG, "/live/s/index.m3u8") == 1.0
    assert policy.max_age_for(404, "max-age=2", CONFIG, "/watch/s") == 1.0


def test_a_404_in_the_future_or_marked_no_store_is_not_stored():
    assert policy.max_age_for(404, "max-age=2", CONFIG, PART, in_future=True) == policy.NOT_STORABLE
    assert policy.max_age_for(404, policy.NO_STORE, CONFIG, PART) == policy.NOT_STORABLE  # from an edge below
    assert policy.max_age_for(404, "private", CONFIG, "/live/s/index.m3u8") == policy.NOT_STORABLE
    assert policy.max_age_for(200, "max-age=60", CONFIG, PART, in_future=False) == 60.0


def test_the_frontier_of_a_playlist_is_its_hint_or_the_segment_after_its_last():
    ll = (GOLDEN / "ll_video_full.m3u8").read_text()  # ... v-5e55101d-10.2.m4s, hint 10.3
    assert playlist_frontier("/live/s/ll/video.m3u8", ll) == (("/live/s/ll", "v", "5e55101d"), (10, 3))
    delta = (GOLDEN / "ll_video_delta.m3u8").read_text()
    assert playlist_frontier("/live/s/ll/video.m3u8", delta) == (("/live/s/ll", "v", "5e55101d"), (10, 3))
    hls = (GOLDEN / "hls_live.m3u8").read_text()  # last segment 5e55101d-8.ts
    assert playlist_frontier("/live/s/index.m3u8", hls) == (("/live/s", "", "5e55101d"), (9, 0))
    assert playlist_frontier("/live/s/ll.m3u8", (GOLDEN / "multivariant.m3u8").read_text()) is None
    assert playlist_frontier("/live/s/ll/video.m3u8", "#EXTM3U\n") is None


def test_media_names():
    part = media_name("/live/s/ll/v-abc-5.4.m4s")
    assert part is not None and (part.rendition, part.msn, part.part) == (("/live/s/ll", "v", "abc"), 5, 4)
    segment = media_name("/live/s/abc-7.ts")
    assert segment is not None and (segment.rendition, segment.msn, segment.part) == (("/live/s", "", "abc"), 7, None)
    for other in ("/live/s/ll/v-init-abc-0.mp4", "/live/s/index.m3u8", "/live/s/ll/v-abc--5.m4s", "/live/s/x-y.ts"):
        assert media_name(other) is None, other


def test_what_is_in_the_future():
    frontiers = Frontiers()
    assert frontiers.in_future("/live/s/ll/v-5e55101d-3.0.m4s")  # no playlist seen: may be published later
    assert not frontiers.in_future("/live/s/ll/v-init-5e55101d-0.mp4")  # not a segment or part
    frontiers.learn("/live/s/ll/video.m3u8", (GOLDEN / "ll_video_full.m3u8").read_text())  # hint 10.3
    name = "/live/s/ll/v-5e55101d-{}.m4s".format
    assert frontiers.in_future(name("10.3")) and frontiers.in_future(name("10.4")) and frontiers.in_future(name("11.0"))
    assert not frontiers.in_future(name("10.2")) and not frontiers.in_future(name("9.9"))
    assert not frontiers.in_future(name("9.12"))  # past the end of a complete parent: never published
    assert frontiers.in_future(name("10")) and not frontiers.in_future(name("9"))  # parent 10 is still open
    assert frontiers.in_future("/live/s/ll/v-0ther-1.0.m4s")  # another session: nothing known
    assert frontiers.in_future("/live/other/ll/v-5e55101d-1.0.m4s")  # another directory: nothing known
    frontiers.learn("/live/s/index.m3u8", (GOLDEN / "hls_live.m3u8").read_text())
    assert not frontiers.in_future("/live/s/5e55101d-8.ts") and frontiers.in_future("/live/s/5e55101d-9.ts")


def test_a_frontier_only_moves_forward_and_is_bounded():
    frontiers = Frontiers(max_renditions=2)
    hint = '#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="v-abc-{}.m4s"\n'.format
    frontiers.learn("/a/ll/video.m3u8", hint("5.2"))
    frontiers.learn("/a/ll/video.m3u8", hint("5.1"))  # an older playlist, answered late
    assert frontiers.frontier(("/a/ll", "v", "abc")) == (5, 2)
    frontiers.learn("/a/ll/video.m3u8", hint("6.0"))
    assert frontiers.frontier(("/a/ll", "v", "abc")) == (6, 0)
    frontiers.learn("/b/ll/video.m3u8", hint("1.0"))
    frontiers.learn("/c/ll/video.m3u8", hint("1.0"))
    assert len(frontiers) == 2 and frontiers.frontier(("/a/ll", "v", "abc")) is None


# Canonical keys and the upstream request ------------------------------------------------

PLAYLIST = "/live/s/ll/video.m3u8"


def request(query: str, path: str = PLAYLIST) -> keys.EdgeRequest:
    return keys.edge_request(path, path, query, policy.is_playlist(path))


def test_directive_numbers_are_keyed_and_sent_as_integers():
    plain = request("_HLS_msn=7&_HLS_part=2")
    assert plain.key == PLAYLIST + "?_HLS_msn=7&_HLS_part=2" and plain.upstream == plain.key
    for spelling in ("_HLS_msn=007&_HLS_part=02", "_HLS_part=2&_HLS_msn=0007", "_HLS_msn=7&_HLS_part=2&_HLS_msn=8"):
        assert request(spelling) == plain, spelling
    assert request("_HLS_msn=0").key == PLAYLIST + "?_HLS_msn=0" and request("_HLS_msn=000").key.endswith("msn=0")
    assert request("_HLS_msn=" + "0" * 40 + "7").key == PLAYLIST + "?_HLS_msn=7"  # zeros are not digits that count
    assert request("_HLS_msn=7").directives.blocking and not request("").directives.blocking


def test_skip_is_kept_only_as_yes_or_v2():
    none = request("_HLS_msn=7")
    for ignored in ("x", "yes", "NO", "", "v3", "YES%20"):
        assert request(f"_HLS_msn=7&_HLS_skip={ignored}") == none, ignored  # not in the key, not sent upstream
    for kept in ("YES", "v2"):
        asked = request(f"_HLS_msn=07&_HLS_skip={kept}")
        assert asked.key == asked.upstream == f"{PLAYLIST}?_HLS_msn=7&_HLS_skip={kept}"


@pytest.mark.parametrize(
    "query",
    [
        "_HLS_msn=abc",
        "_HLS_msn=",
        "_HLS_msn=-1",
        "_HLS_msn=%2B7",  # +7
        "_HLS_msn=7.0",
        "_HLS_msn=1e3",
        "_HLS_msn=%207",  # a space first
        "_HLS_msn=%C2%B2",  # a superscript two: a digit to str.isdigit, not to the origin
        "_HLS_msn=7&_HLS_part=x",
        "_HLS_msn=1234567890123456789",  # 19 significant digits
        "_HLS_part=3",  # without _HLS_msn (the draft: 400)
    ],
)
def test_malformed_directives_are_refused(query: str):
    with pytest.raises(keys.BadDirective):
        request(query)


def test_tokens_are_kept_apart_from_the_key_and_the_upstream_query():
    asked = request("token=a%2Bb&_HLS_msn=07&x=1&_HLS_skip=x&token=second")
    assert asked.key == PLAYLIST + "?_HLS_msn=7"
    assert asked.upstream == PLAYLIST + "?_HLS_msn=7&x=1"  # other parameters as received
    assert asked.token == "a+b"  # the first one, decoded: the edge checks it and signs its own upstream


def test_media_paths_take_no_directives():
    segment = "/live/s/abc-7.ts"
    asked = request("_HLS_msn=abc&_HLS_part=1&token=t", segment)  # the origin ignores them there
    assert (asked.key, asked.upstream, asked.directives.blocking, asked.token) == (segment, segment, False, "t")


def test_the_stream_of_a_path():
    assert keys.stream_of("/live/shop1/ll/v-ab-3.1.m4s") == "shop1"
    assert keys.stream_of("/live/shop1/index.m3u8") == "shop1"
    assert keys.stream_of("/live/shop1") is None
    assert keys.stream_of("/watch/shop1") is None
    assert keys.stream_of("/live//x.ts") is None


def test_the_client_is_the_peer_unless_a_trusted_proxy_names_it():
    none: tuple[keys.Network, ...] = ()
    assert keys.client_address("192.0.2.1", "203.0.113.9", none) == "192.0.2.1"  # header from anyone: ignored
    trusted = keys.parse_networks(["10.0.0.0/8", "2001:db8::1"])
    assert keys.client_address("192.0.2.1", "203.0.113.9", trusted) == "192.0.2.1"  # untrusted peer: ignored
    assert keys.client_address("10.1.2.3", "203.0.113.9", trusted) == "203.0.113.9"
    # right to left past the trusted hops; whatever the client wrote further left does not count
    assert keys.client_address("10.1.2.3", "6.6.6.6, 203.0.113.9, 10.9.9.9", trusted) == "203.0.113.9"
    assert keys.client_address("::ffff:10.1.2.3", "203.0.113.9", trusted) == "203.0.113.9"  # IPv4-mapped peer
    assert keys.client_address("2001:db8::1", "2001:DB8:0::2", trusted) == "2001:db8::2"
    # a trusted proxy naming no client asks for the viewers behind it: no one client
    assert keys.client_address("10.1.2.3", "", trusted) is None
    assert keys.client_address("10.1.2.3", "10.4.4.4", trusted) is None
    assert keys.client_address(None, "", none) == "?"
    with pytest.raises(ValueError):
        keys.parse_networks(["not-an-address"])


# Blocked-request admission ----------------------------------------------------------------


def test_blocked_requests_are_bounded_per_client_by_distinct_keys():
    blocked = limits.BlockedRequests(per_client=8, in_total=100)
    assert [blocked.admit("a", f"k{i}") for i in range(20)] == [None] * 8 + [limits.CLIENT] * 12
    assert blocked.admit("a", "k0") is None  # the same key again costs no upstream: admitted
    assert blocked.admit("b", "k99") is None  # another client is not affected
    assert (blocked.requests, blocked.keys, blocked.keys_of("a")) == (10, 9, 8)
    blocked.release("a", "k0")
    assert blocked.admit("a", "k8") == limits.CLIENT  # k0 is still held once
    blocked.release("a", "k0")
    assert blocked.admit("a", "k8") is None
    for i in range(1, 9):
        blocked.release("a", f"k{i}")
    blocked.release("b", "k99")
    assert (blocked.requests, blocked.keys, blocked.keys_of("a")) == (0, 0, 0)


def test_blocked_requests_are_bounded_in_total_by_distinct_keys():
    blocked = limits.BlockedRequests(per_client=8, in_total=3)
    assert [blocked.admit(f"c{i}", f"k{i}") for i in range(5)] == [None, None, None, limits.UPSTREAM, limits.UPSTREAM]
    assert blocked.admit("c9", "k1") is None  # joins a fetch in flight: no new connection
    assert blocked.admit(None, "k4") == limits.UPSTREAM  # a trusted proxy's own request: the total bound only
    assert blocked.admit(None, "k2") is None
    blocked.release("c0", "k0")
    assert blocked.admit("c4", "k4") is None


def test_the_upstream_bound_leaves_connections_for_media():
    assert policy.blocked_upstream_limit(EdgeConfig()) == 128  # of 256 connections
    assert policy.blocked_upstream_limit(EdgeConfig(max_connections=10, max_blocked_upstream=128)) == 5
    assert policy.blocked_upstream_limit(EdgeConfig(max_connections=1)) == 1
    assert EdgeConfig().max_blocked_per_client == 8 and EdgeConfig().trusted_proxies == []


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("GZIP;q=1", True),
        ("x-gzip", True),
        ("gzip;q=0.5", True),
        ("*", True),
        ("deflate, *", True),
        ("", False),
        ("identity", False),
        ("br;q=1, gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip ; q=0", False),
        ("gzip;q=0, *", False),  # gzip refused by name: the wildcard does not bring it back
        ("*;q=0", False),
    ],
)
def test_accept_encoding_gzip(header: str, accepted: bool):
    assert policy.accepts_gzip(header) is accepted


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_accept_encoding_never_fails_and_gzip_by_name_decides(header: str):
    policy.accepts_gzip(header)  # any header a client sends is an answer, not an exception
    assert policy.accepts_gzip(f"gzip;q=0, {header}") is False
    assert policy.accepts_gzip(f"gzip, {header}") is True


def test_each_stream_has_one_owner_worker_and_the_others_ask_it():
    peers = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    owners = {name: workers.owner_of(name, 2) for name in (f"s{i}" for i in range(40))}
    assert set(owners.values()) == {0, 1}  # streams spread over both
    assert workers.owner_of("s1", 2) == workers.owner_of("s1", 2) == zlib.crc32(b"s1") % 2  # stable across processes
    for name, owner in owners.items():
        assert workers.sibling_for(name, owner, peers) is None  # the owner asks the upstreams
        assert workers.sibling_for(name, 1 - owner, peers) == peers[owner]
    assert workers.sibling_for(None, 0, peers) is None  # not a stream: fetched where asked
    assert workers.sibling_for("s1", 0, []) is None  # one process


def test_a_cached_playlist_counts_its_gzip_body_in_the_budget():
    plain = CachedResponse(200, b"x" * 1000, (), 0.0, 1.0)
    zipped = CachedResponse(200, b"x" * 1000, (), 0.0, 1.0, gzip_body=b"z" * 30)
    assert zipped.size == plain.size + 30


def test_worker_metrics_merge_into_one_exposition_labelled_by_worker():
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    texts = {}
    for worker, hits in ((0, 3), (1, 5)):
        registry = CollectorRegistry()
        Counter("mediacore_edge_hits", "Requests served from cache", registry=registry).inc(hits)
        Histogram("mediacore_edge_upstream_seconds", "Upstream time", registry=registry).observe(0.1 * hits)
        texts[worker] = generate_latest(registry).decode()
    merged = workers.merge_metrics(texts).decode()
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    hits = {s.labels["worker"]: s.value for s in families["mediacore_edge_hits"].samples}
    assert hits == {"0": 3.0, "1": 5.0}
    counts = {
        s.labels["worker"]: s.value
        for s in families["mediacore_edge_upstream_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {"0": 1.0, "1": 1.0}
    assert merged.count("# TYPE mediacore_edge_hits_total counter") == 1  # each family once

"""The edge node: serves the origin's URL space from a byte-bounded cache.

- Misses for one cache key share one upstream request (Collapser); LL-HLS blocking
  playlist requests and preload-hint part requests are keyed by their path plus the
  canonical `_HLS_msn/_HLS_part/_HLS_skip` (`edge.keys`: integers without leading zeros,
  skip only as YES or v2), so thousands of viewers blocked on the next part cost one
  upstream request. Malformed directives are answered 400 here. Other query parameters
  (playback tokens) go upstream but are not part of the key.
- Blocked requests (`_HLS_msn`) are admitted per client and in total (`edge.limits`): past
  the bounds 429 / 503 with Retry-After, so no client can hold the upstream connections.
- Freshness follows the upstream's Cache-Control; responses carry `Age` (HLS-RULES 1c).
- When the upstream fails, cached media is served stale; playlists only while younger than
  `stale_playlist_seconds`, then a clear 502. Upstream 404s are cached briefly, media 404s
  under a part target, and a 404 for a segment or part not published yet (`edge.frontier`)
  not at all: it is passed on with no-store.
- Upstreams are tried in order: an edge can use another edge (tiers), or several origins of
  an origin cluster (`--origin A --origin B`). An origin that does not own a stream answers
  302 to the owner; the edge follows it (at most MAX_REDIRECTS hops, never passing the 302
  on) and remembers the stream's owner for `owner_ttl` seconds (`edge.owners`), so later
  requests go straight there; an owner that fails is forgotten and the upstreams are asked
  again. Cache and collapsing keys stay the request's path, whichever origin answered.
- Playback tokens (`mediacore.access.tokens`): the origin marks every response of a protected
  stream `X-Mediacore-Protected: 1`, and the edge keeps that mark in the cache entry. With the
  secret (`playback_secret`) the edge checks a request's token itself (403 / 410, counted in
  `mediacore_edge_refused`), keys and stores responses without tokens (the upstream's token is
  taken off the playlist URIs before storing), asks the upstream with a short-lived token of
  its own, and writes the viewer's own token into each playlist it serves. Each request is
  authorised on its own when it is answered, whether from the cache, a collapsed fetch or a
  stale copy: a marked entry goes only to a request with a valid token, so one viewer's
  token never serves another who has none. An upstream 403 / 410 is never stored.

- Several workers (`mediacore edge --workers N`, `edge.supervisor`): a stream owned by another
  worker (`edge.workers`) is fetched from that worker's loopback peer listener, which is this
  same app; a sibling's blocked requests there are bounded in total only, as a trusted proxy's.
- The public listener answers GET / HEAD requests of plain paths (with delivery directives at
  most) itself from pre-rendered answers (`edge.fastpath`), blocked playlist reloads included,
  through `fast_request`, `fresh_entry`, `obtain`, `answer` and `blocked`, the rules `handle` uses.

What to serve from the cache is decided in `edge.policy` (pure, given `now`); this module is
the aiohttp shell around it. The clock is injected (`EdgeNode(clock=...)`) so tests can move it.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote, urljoin

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from edge import keys, limits, owners, policy, workers
from edge.cache import CachedResponse, ResponseCache, age_of
from edge.collapse import Collapser
from edge.config import EdgeConfig
from edge.fastpath import FastListener
from edge.frontier import Frontiers
from mediacore.access.tokens import MIN_SECRET_BYTES, TOKEN_PARAM, Verdict, sign, verify
from mediacore.playlist.query import with_query, without_query

log = logging.getLogger("mediacore.edge")

PROTECTED_HEADER = "X-Mediacore-Protected"
"""Set by the origin on every response of a stream that needs a playback token; kept in the entry."""
PASSED_HEADERS = ("Content-Type", "Cache-Control", "Expires", "Last-Modified", PROTECTED_HEADER)
EDGE_VIEWER = "edge"
"""The viewer id in the tokens the edge signs for its upstream requests (it shows in the origin's logs)."""
FRESHNESS_HEADERS = ("Cache-Control", "Expires")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Upstream seconds: from a parent tier's cache hit (milliseconds) to LL-HLS blocking requests held for seconds."""


GZIP_LEVEL = 6
"""zlib's default: playlists are compressed once per upstream fetch, so a higher level buys
little (they are small and repetitive) and costs on every part."""
VARIED = "Accept-Encoding"
"""Playlists come as identity or gzip: the Vary header keeps caches after the edge from mixing them."""

LISTEN_BACKLOG = 1024
"""Connections the kernel queues for accept: thousands of viewers joining at once are not
dropped into SYN retries (capped by net.core.somaxconn)."""

SIBLING_METRICS_TIMEOUT = 2.0
"""Seconds a worker waits for a sibling's figures when answering /metrics (a scrape's budget is
typically 10 s); a worker that does not answer in time is left out of that scrape."""

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 2
"""Redirects followed for one upstream request: an origin to the owner is one; a second covers
a stream that moved while the first was under way."""


class UpstreamError(Exception):
    """The upstream could not be reached or answered with a server error."""


def compress(body: bytes) -> bytes:
    """The gzip form of a playlist (no timestamp: the same body compresses to the same bytes)."""
    return gzip.compress(body, GZIP_LEVEL, mtime=0)


def bad_gateway_text(error: UpstreamError) -> str:
    """The body of the 502 answering a request the upstream failed and no stale copy covers."""
    return f"upstream unavailable: {error}"


REFUSED_BAD_DIRECTIVE = "bad_directive"
REFUSED_TOKEN = {Verdict.FORBIDDEN: "token_forbidden", Verdict.EXPIRED: "token_expired"}
"""A request whose playback token is bad or expired -> the `reason` label of mediacore_edge_refused."""
REFUSED_NO_TOKEN = "token_missing"
"""A request without a (checkable) playback token for a response marked protected."""
REFUSED = {limits.CLIENT: ("blocked_per_client", 429), limits.UPSTREAM: ("blocked_upstream", 503)}
"""Why a blocked request was refused -> the `reason` label of mediacore_edge_refused and the status."""


def edge_request(request: web.Request) -> keys.EdgeRequest:
    """The cache key and upstream path of a request (BadDirective for malformed directives)."""
    url = request.rel_url
    return keys.edge_request(request.path, url.raw_path, url.raw_query_string, policy.is_playlist(request.path))


class EdgeNode:
    def __init__(
        self,
        config: EdgeConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` is the source of time for caching (monotonic seconds): freshness, Age, stale
        windows and upstream latency all read it, so a test can drive them without waiting.
        `wall_clock` (seconds since the epoch) is read only for playback token expiry."""
        if not config.upstreams:
            raise ValueError("an edge needs at least one upstream (--origin)")
        self.secret = config.playback_secret.encode()
        if self.secret and len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the playback secret must be at least {MIN_SECRET_BYTES} bytes")
        self.wall_clock = wall_clock
        self.config = config
        self.clock = clock
        self.cache = ResponseCache(config.cache_mb * 1024 * 1024)
        self.collapser: Collapser[CachedResponse] = Collapser()
        self.frontiers = Frontiers()
        self.owners = owners.Owners(config.owner_ttl)
        self.trusted_proxies = keys.parse_networks(config.trusted_proxies)
        self.blocked = limits.BlockedRequests(config.max_blocked_per_client, policy.blocked_upstream_limit(config))
        self._session: aiohttp.ClientSession | None = None
        self.peer_port: int | None = None
        """The port of this worker's peer listener (set by `run_edge`), where siblings ask."""
        self.worker_header = {workers.WORKER_HEADER: str(config.worker)} if config.peers else {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter("mediacore_edge_hits", "Requests served from cache", registry=r)
        self.misses = Counter("mediacore_edge_misses", "Requests that needed the upstream", registry=r)
        self.collapsed = Counter(
            "mediacore_edge_collapsed", "Misses that waited on another request's fetch", registry=r
        )
        self.stale = Counter(
            "mediacore_edge_stale_served", "Stale responses served because the upstream failed", registry=r
        )
        self.upstream_errors = Counter("mediacore_edge_upstream_errors", "Failed upstream requests", registry=r)
        self.upstream_requests = Counter("mediacore_edge_upstream_requests", "Requests sent upstream", registry=r)
        self.redirects = Counter(
            "mediacore_edge_redirects_followed",
            "Upstream redirects followed (an origin cluster's 302 to a stream's owner)",
            registry=r,
        )
        self.upstream_latency = Histogram(
            "mediacore_edge_upstream_seconds",
            "Upstream response time (blocking requests included)",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.bytes_out = Counter("mediacore_edge_bytes_out", "Body bytes sent to clients", registry=r)
        self.cache_bytes = Gauge("mediacore_edge_cache_bytes", "Bytes held in the cache", registry=r)
        self.cache_entries = Gauge("mediacore_edge_cache_entries", "Entries held in the cache", registry=r)
        self.evictions = Gauge("mediacore_edge_evictions", "Entries evicted to stay within the budget", registry=r)
        self.waiting = Gauge("mediacore_edge_collapsed_waiters", "Distinct keys being fetched right now", registry=r)
        self.refused = Counter(
            "mediacore_edge_refused",
            "Requests answered without the upstream: 400 malformed _HLS_ directive, 429 / 503 blocked-request bounds",
            ["reason"],
            registry=r,
        )
        for reason in (
            REFUSED_BAD_DIRECTIVE,
            *(name for name, _ in REFUSED.values()),
            *REFUSED_TOKEN.values(),
            REFUSED_NO_TOKEN,
        ):
            self.refused.labels(reason)
        self.future_404 = Counter(
            "mediacore_edge_future_404",
            "404s for segments or parts not published yet, passed on with no-store instead of cached",
            registry=r,
        )
        self.blocked_requests = Gauge(
            "mediacore_edge_blocked_requests", "Blocked playlist requests (_HLS_msn) in flight", registry=r
        )
        self.blocked_keys = Gauge(
            "mediacore_edge_blocked_keys", "Distinct blocked playlist requests in flight (upstream fetches)", registry=r
        )

    # Upstream --------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            c = self.config
            connector = aiohttp.TCPConnector(
                limit=c.max_connections * len(c.upstreams),
                limit_per_host=c.max_connections,
                keepalive_timeout=c.upstream_keepalive,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.upstream_timeout),
                auto_decompress=True,
            )
        return self._session

    async def _fetch(self, path: str, path_qs: str) -> CachedResponse:
        """GET `path_qs` (the canonical upstream form of a request for `path`) from the stream's
        known owner, else from the first upstream that answers, following its redirects."""
        stream = keys.stream_of(path)
        owner = self.owners.get(stream, self.clock()) if stream is not None else None
        sibling = workers.sibling_for(stream, self.config.worker, self.config.peers)
        bases = [sibling] if sibling is not None else []  # the worker owning the stream, if not this one
        bases += [owner] if owner is not None else []
        bases += [u.rstrip("/") for u in self.config.upstreams if u.rstrip("/") not in (owner, sibling)]
        last_error: Exception | None = None
        for base in bases:
            start = self.clock()
            try:
                status, headers, body = await self._get(base + path_qs, stream)
                now = self.clock()
                self.upstream_latency.observe(now - start)
                return self._response(path, status, headers, body, now)
            except (TimeoutError, aiohttp.ClientError, UpstreamError) as e:
                self.upstream_errors.inc()
                last_error = e
                if stream is not None:
                    self.owners.forget(stream)  # the owner (or the one redirected to) failed: ask again
                log.warning("edge: upstream %s failed for %s: %s", base, path_qs, e or type(e).__name__)
        raise UpstreamError(str(last_error) or type(last_error).__name__)

    async def _get(self, url: str, stream: str | None) -> tuple[int, Mapping[str, str], bytes]:
        """One upstream GET, following redirects (an origin cluster's 302 to the stream's owner,
        remembered for `owner_ttl`); a 5xx is an UpstreamError."""
        for _ in range(MAX_REDIRECTS + 1):
            self.upstream_requests.inc()
            async with self.session().get(url, headers={"Accept-Encoding": "identity"}, allow_redirects=False) as resp:
                body = await resp.read()
                if resp.status >= 500:
                    raise UpstreamError(f"{url} answered {resp.status}")
                location = resp.headers.get("Location")
                if resp.status not in REDIRECTS or not location:
                    return resp.status, resp.headers, body
            target = urljoin(url, location)
            base = owners.base_of(target)
            if base is None:
                raise UpstreamError(f"{url} redirected to {location!r}, not an http(s) URL")
            self.redirects.inc()
            if stream is not None:
                self.owners.learn(stream, base, self.clock())
            url = target
        raise UpstreamError(f"more than {MAX_REDIRECTS} redirects for {url}")

    def _response(
        self, path: str, status: int, upstream_headers: Mapping[str, str], body: bytes, now: float
    ) -> CachedResponse:
        """The entry for an upstream answer; a 404 for a name still in the future goes out no-store."""
        headers = tuple((h, upstream_headers[h]) for h in PASSED_HEADERS if h in upstream_headers)
        cache_control = upstream_headers.get("Cache-Control", "")
        in_future = status == 404 and self.frontiers.in_future(path)
        if in_future:  # true only until it is published: neither this edge nor any cache after it keeps it
            self.future_404.inc()
            headers = tuple(h for h in headers if h[0] not in FRESHNESS_HEADERS) + (("Cache-Control", policy.NO_STORE),)
        elif status == 200 and policy.is_playlist(path):
            text = body.decode("utf-8", "replace")
            if PROTECTED_HEADER in upstream_headers:  # stored token-free; each viewer gets its own written in
                text = without_query(text, TOKEN_PARAM)
                body = text.encode()
            self.frontiers.learn(path, text)
        max_age = policy.max_age_for(status, cache_control, self.config, path, in_future)
        # A playlist's gzip variant is made here, once per fetch, not once per viewer; a protected
        # one gets each viewer's token written in, so it is compressed per response instead.
        compressed = (
            compress(body)
            if status == 200 and policy.is_playlist(path) and PROTECTED_HEADER not in upstream_headers
            else None
        )
        return CachedResponse(status, body, headers, now, max_age, age_of(upstream_headers.get("Age", "")), compressed)

    # Serving ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/metrics":
            return await self.metrics_response(self._on_peer_listener(request))
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        try:
            wanted = edge_request(request)
        except keys.BadDirective as e:
            self.refused.labels(REFUSED_BAD_DIRECTIVE).inc()
            raise web.HTTPBadRequest(text=str(e), headers=self._cors()) from e
        key = wanted.key
        stream = keys.stream_of(request.path)
        token: str | None = None  # the request's token, once checked
        if stream is not None and wanted.token is not None and self.secret:
            verdict = verify(self.secret, wanted.token, stream, self.wall_clock())
            if verdict is not Verdict.VALID:
                return self._refuse_token(REFUSED_TOKEN[verdict], verdict.status)
            token = wanted.token
        upstream = self._upstream_path(stream, wanted)
        now = self.clock()
        entry = self.cache.get(key)
        if entry is not None and policy.serve_fresh(entry, now):
            self.hits.inc()
            return self.respond(request, entry, now, "HIT", token)
        if not wanted.directives.blocking:
            return await self._miss(request, key, upstream, token)
        client = self._client(request)
        refused = self.blocked.admit(client, key)
        if refused is not None:
            return self._refuse(refused, client, key)
        try:
            return await self._miss(request, key, upstream, token)
        finally:
            self.blocked.release(client, key)

    def _on_peer_listener(self, request: web.Request) -> bool:
        """Whether a sibling worker sent this request (on this worker's loopback peer listener)."""
        if self.peer_port is None or request.transport is None:
            return False
        local = request.transport.get_extra_info("sockname")
        return local is not None and local[1] == self.peer_port

    def _client(self, request: web.Request) -> str | None:
        """Who a blocked request is admitted for: None for a sibling worker asking on the peer
        listener (its viewers were admitted there), else the address `keys.client_address` names."""
        if self._on_peer_listener(request):
            return None
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", []))
        return keys.client_address(request.remote, forwarded, self.trusted_proxies)

    def _upstream_path(self, stream: str | None, wanted: keys.EdgeRequest) -> str:
        """What to ask the upstream: with the secret, any stream's path carries a token the edge
        signs itself (the same for every viewer, so collapsing and the cache stay shared);
        without it, the viewer's token goes as it came."""
        if stream is not None and self.secret:
            expires = int(self.wall_clock()) + self.config.upstream_token_ttl
            return keys.with_param(wanted.upstream, TOKEN_PARAM, sign(self.secret, stream, expires, EDGE_VIEWER))
        if wanted.token is not None:
            return keys.with_param(wanted.upstream, TOKEN_PARAM, quote(wanted.token, safe=""))
        return wanted.upstream

    def _refuse_token(self, reason: str, status: int) -> web.Response:
        self.refused.labels(reason).inc()
        headers = self._cors()
        headers["Cache-Control"] = policy.NO_STORE
        headers[PROTECTED_HEADER] = "1"
        text = "playback token expired" if status == 410 else "playback token missing or invalid"
        return web.Response(status=status, text=text, headers=headers)

    def _refuse(self, bound: str, client: str | None, key: str) -> web.Response:
        reason, status = REFUSED[bound]
        self.refused.labels(reason).inc()
        log.debug("edge: %s refused for %s (%s)", key, client, reason)
        headers = self._cors()
        headers["Retry-After"] = str(policy.RETRY_AFTER_SECONDS)
        headers["Cache-Control"] = policy.NO_STORE
        text = "too many blocked requests from this client" if bound == limits.CLIENT else "too many blocked requests"
        return web.Response(status=status, text=text, headers=headers)

    async def _miss(self, request: web.Request, key: str, upstream_path: str, token: str | None) -> web.StreamResponse:
        got = await self.obtain(key, request.path, upstream_path)
        if isinstance(got, UpstreamError):
            raise web.HTTPBadGateway(text=bad_gateway_text(got), headers=self._cors()) from got
        entry, state = got
        return self.respond(request, entry, self.clock(), state, token)

    async def obtain(self, key: str, path: str, upstream_path: str) -> tuple[CachedResponse, str] | UpstreamError:
        """A miss: the upstream's answer for `key` (one fetch shared by every request waiting for
        it) and MISS, or after a failure the cached copy if it may be served stale and STALE, or
        the failure (a 502)."""
        self.misses.inc()
        before = self.collapser.collapsed
        try:
            entry = await self.collapser.run(key, lambda: self._store(key, path, upstream_path))
        except UpstreamError as e:
            stale = self.cache.get(key)
            if stale is not None and policy.may_serve_stale(path, stale, self.clock(), self.config):
                self.stale.inc()
                return stale, "STALE"
            return e
        if self.collapser.collapsed > before:
            self.collapsed.inc()
        return entry, "MISS"

    def fast_request(self, path: str, raw_query: str) -> keys.EdgeRequest | None:
        """What `handle` keys a GET or HEAD of `path` (decoded, no escapes) with `raw_query`
        (delivery directives only) by, for the fast path; None when the answer is the app's:
        /metrics, a malformed directive (the app's 400, counted there) or a playback token."""
        if path == "/metrics":
            return None
        try:
            wanted = keys.edge_request(path, path, raw_query, policy.is_playlist(path))
        except keys.BadDirective:
            return None
        return None if wanted.token is not None else wanted

    def fresh_entry(self, wanted: keys.EdgeRequest) -> CachedResponse | None:
        """The fresh entry `handle` answers `wanted` with without asking the upstream (a
        protected one included: the caller leaves that to the app); None on a miss (not counted)."""
        entry = self.cache.get(wanted.key)
        return entry if entry is not None and policy.serve_fresh(entry, self.clock()) else None

    def upstream_of(self, path: str, wanted: keys.EdgeRequest) -> str:
        """The upstream path and query `handle` asks for `wanted`."""
        return self._upstream_path(keys.stream_of(path), wanted)

    def client_of(self, peer: str | None, forwarded: str) -> str | None:
        """Who a blocked request is admitted for (`keys.client_address`): the public listener's
        peer, or the viewer a trusted proxy names."""
        return keys.client_address(peer, forwarded, self.trusted_proxies)

    def protected(self, entry: CachedResponse) -> bool:
        """An entry only a request with a valid token gets (the app checks tokens)."""
        return PROTECTED_HEADER in dict(entry.headers)

    async def plain_answer(self, path: str) -> tuple[CachedResponse, str] | Exception | None:
        """What `handle` answers a GET or HEAD of a plain `path` (no query) with, for the fast
        path: a fresh entry (HIT) or `obtain`'s result; None when the answer is not the cache's
        (/metrics) or the entry is protected (the request has no token: `handle` refuses it)."""
        wanted = self.fast_request(path, "")
        if wanted is None:
            return None
        entry = self.fresh_entry(wanted)
        got: tuple[CachedResponse, str] | UpstreamError
        if entry is not None:
            got = (entry, "HIT")
        else:
            got = await self.obtain(wanted.key, path, self.upstream_of(path, wanted))
        if not isinstance(got, Exception) and self.protected(got[0]):
            return None
        if entry is not None:
            self.hits.inc()
        return got

    async def _store(self, key: str, path: str, path_qs: str) -> CachedResponse:
        self.waiting.set(self.collapser.inflight)
        log.debug("edge: upstream fetch %s", key)  # one line per key per fetch: a herd shows up as repeats
        entry = await self._fetch(path, path_qs)
        if policy.storable(entry):
            self.cache.put(key, entry)
        return entry

    def _cors(self) -> dict[str, str]:
        if not self.config.cors_origin:
            return {}
        return {
            "Access-Control-Allow-Origin": self.config.cors_origin,
            "Access-Control-Expose-Headers": "Age, Content-Length, Date",
        }

    def respond(
        self, request: web.Request, entry: CachedResponse, now: float, state: str, token: str | None = None
    ) -> web.Response:
        """`entry` for `request`, whose checked playback token is `token` (None: it has none).
        An entry marked protected goes only to a request with a valid token, and a playlist in
        it carries that request's token on every URI."""
        if token is None and PROTECTED_HEADER in dict(entry.headers):
            return self._refuse_token(REFUSED_NO_TOKEN, 403)
        headers, body = self.answer(request.path, entry, request.headers.get("Accept-Encoding", ""), token)
        headers["Age"] = str(int(entry.age(now)))
        headers["X-Cache"] = state
        content_type = headers.pop("Content-Type")
        response = web.Response(
            status=entry.status,
            body=body if request.method == "GET" else b"",
            headers=headers,
            content_type=content_type,
        )
        self.bytes_out.inc(len(body))
        return response

    def answer(
        self, path: str, entry: CachedResponse, accept_encoding: str, token: str | None
    ) -> tuple[dict[str, str], bytes]:
        """The headers (all but Age and X-Cache) and body for `entry` answering `path`: the one
        rule for both the aiohttp app and the fast path (`edge.fastpath`). A protected playlist
        gets `token` written into its URIs. A playlist goes gzip to a client that takes it: the
        body compressed when stored, else (a 404, a protected playlist) compressed here."""
        headers = dict(entry.headers)
        body = entry.body
        playlist = policy.is_playlist(path)
        if token is not None and PROTECTED_HEADER in headers and entry.status == 200 and playlist:
            body = with_query(body.decode("utf-8", "replace"), TOKEN_PARAM, token).encode()
        if playlist:
            headers["Vary"] = VARIED
            if policy.accepts_gzip(accept_encoding):
                body = entry.gzip_body if entry.gzip_body is not None and body is entry.body else compress(body)
                headers["Content-Encoding"] = "gzip"
        headers.update(self._cors())
        headers.update(self.worker_header)
        headers["Content-Type"] = headers.get("Content-Type", "application/octet-stream").split(";")[0]
        return headers, body

    def plain_hit(self, path: str) -> CachedResponse | None:
        """The fresh, unprotected entry answering a GET or HEAD of a plain `path` (no query) as
        `handle` would, found without waiting; None for anything else (not counted)."""
        wanted = self.fast_request(path, "")
        entry = None if wanted is None else self.fresh_entry(wanted)
        return None if entry is None or self.protected(entry) else entry

    def failure(self, error: Exception) -> tuple[int, dict[str, str], bytes]:
        """The 502 answering a plain request when the upstream failed and no stale copy covers it."""
        assert isinstance(error, UpstreamError)
        headers = {**self._cors(), "Content-Type": "text/plain; charset=utf-8"}
        return 502, headers, bad_gateway_text(error).encode()

    def count_hit(self) -> None:
        self.hits.inc()

    def count_out(self, body_bytes: int) -> None:
        self.bytes_out.inc(body_bytes)

    def count_joined(self) -> None:
        """A request waiting on a fetch another request of the fast path started: a miss that
        collapsed, as `obtain` counts it for the app."""
        self.misses.inc()
        self.collapsed.inc()

    async def metrics_response(self, own_only: bool = False) -> web.Response:
        """This edge's figures; with several workers, every worker's (`workers.merge_metrics`),
        asked of the siblings on their peer listeners, where a worker answers with its own only."""
        self.cache_bytes.set(self.cache.bytes)
        self.cache_entries.set(len(self.cache))
        self.evictions.set(self.cache.evictions)
        self.waiting.set(self.collapser.inflight)
        self.blocked_requests.set(self.blocked.requests)
        self.blocked_keys.set(self.blocked.keys)
        body = generate_latest(self.registry)
        peers = self.config.peers
        if peers and not own_only:
            texts = {self.config.worker: body.decode()}
            for index, peer in enumerate(peers):
                if index != self.config.worker:
                    try:
                        async with self.session().get(
                            peer + "/metrics", timeout=aiohttp.ClientTimeout(total=SIBLING_METRICS_TIMEOUT)
                        ) as r:
                            texts[index] = await r.text()
                    except (TimeoutError, aiohttp.ClientError) as e:  # a restarting worker: left out
                        log.warning("edge: worker %d's metrics unavailable: %s", index, e or type(e).__name__)
            body = workers.merge_metrics(texts)
        headers = {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, **self.worker_header}
        return web.Response(body=body, headers=headers)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()


async def run_edge(
    config: EdgeConfig,
    host: str,
    port: int,
    node: EdgeNode | None = None,
    reuse_port: bool = False,
    peer_socket: socket.socket | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve the edge on host:port (with `reuse_port`, beside the other workers' listeners) and,
    for a worker of several, on its inherited loopback `peer_socket` for its siblings. The public
    listener answers cache hits itself (`edge.fastpath`) and hands every other connection to the
    aiohttp app; the peer listener is the app's alone."""
    node = node or EdgeNode(config)
    app = node.app()
    servers: list[asyncio.Server] = []
    listeners: list[FastListener] = []

    async def close_public(_: web.Application) -> None:
        for server in servers:
            server.close()
        for listener in listeners:
            listener.close()

    app.on_shutdown.append(close_public)  # before setup, which freezes the app
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    listeners.append(FastListener(node, runner.server))
    server = await asyncio.get_running_loop().create_server(
        listeners[0], host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=LISTEN_BACKLOG
    )
    servers.append(server)
    bound = int(server.sockets[0].getsockname()[1])
    if peer_socket is not None:
        await web.SockSite(runner, peer_socket, backlog=LISTEN_BACKLOG).start()
        node.peer_port = int(peer_socket.getsockname()[1])
    log.info("edge on %s:%d in front of %s", host, bound, ", ".join(config.upstreams))
    return runner, bound

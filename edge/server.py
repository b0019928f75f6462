"""The edge node: serves the origin's URL space from a byte-bounded cache.

- Misses for one cache key share one upstream request (Collapser); LL-HLS blocking
  playlist requests and preload-hint part requests are keyed by their path plus the
  normalised `_HLS_msn/_HLS_part/_HLS_skip`, so thousands of viewers blocked on the next
  part cost one upstream request. Other query parameters (playback tokens) go upstream
  but are not part of the key.
- Freshness follows the upstream's Cache-Control; responses carry `Age` (HLS-RULES 1c).
- When the upstream fails, cached media is served stale; playlists only while younger than
  `stale_playlist_seconds`, then a clear 502/504. Upstream 404s are cached briefly.
- Upstreams are tried in order: an edge can use another edge (tiers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edge.cache import CachedResponse, ResponseCache, max_age_of
from edge.collapse import Collapser

log = logging.getLogger("mediacore.edge")

PASSED_HEADERS = ("Content-Type", "Cache-Control", "Expires", "Last-Modified")
HLS_DIRECTIVES = ("_HLS_msn", "_HLS_part", "_HLS_skip")


@dataclass(slots=True)
class EdgeConfig:
    upstreams: list[str] = field(default_factory=list)
    cache_mb: int = 512
    """Cache budget in MiB (bodies plus headers)."""
    upstream_timeout: float = 15.0
    """Seconds for one upstream response; above the origin's 3 x TD blocking limit."""
    negative_ttl: float = 1.0
    """Seconds a 404 from upstream is reused."""
    stale_playlist_seconds: float = 4.0
    """How old a cached playlist may be when served because the upstream failed."""
    max_connections: int = 256
    """Keep-alive connections to each upstream."""
    cors_origin: str = "*"


class UpstreamError(Exception):
    """The upstream could not be reached or answered with a server error."""


def cache_key(request: web.Request) -> str:
    """Path plus the HLS directives in a fixed order (B11); tokens are not part of it."""
    query = [(k, request.query[k]) for k in HLS_DIRECTIVES if k in request.query]
    return request.path + ("?" + urlencode(query) if query else "")


class EdgeNode:
    def __init__(self, config: EdgeConfig) -> None:
        if not config.upstreams:
            raise ValueError("an edge needs at least one upstream (--origin)")
        self.config = config
        self.cache = ResponseCache(config.cache_mb * 1024 * 1024)
        self.collapser: Collapser[CachedResponse] = Collapser()
        # Upstream fetches per key (the newest few thousand keys): a herd shows up here as
        # a key fetched more than once while it was fresh.
        self.fetches: Tally[str] = Tally()
        self._session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter("mediacore_edge_hits", "Requests served from cache", registry=r)
        self.misses = Counter("mediacore_edge_misses", "Requests that needed the upstream", registry=r)
        self.collapsed = Counter("mediacore_edge_collapsed", "Misses that waited on another request's fetch", registry=r)
        self.stale = Counter("mediacore_edge_stale_served", "Stale responses served because the upstream failed", registry=r)
        self.upstream_errors = Counter("mediacore_edge_upstream_errors", "Failed upstream requests", registry=r)
        self.upstream_requests = Counter("mediacore_edge_upstream_requests", "Requests sent upstream", registry=r)
        self.upstream_latency = Histogram(
            "mediacore_edge_upstream_seconds", "Upstream response time (blocking requests included)", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.bytes_out = Counter("mediacore_edge_bytes_out", "Body bytes sent to clients", registry=r)
        self.cache_bytes = Gauge("mediacore_edge_cache_bytes", "Bytes held in the cache", registry=r)
        self.cache_entries = Gauge("mediacore_edge_cache_entries", "Entries held in the cache", registry=r)
        self.evictions = Gauge("mediacore_edge_evictions", "Entries evicted to stay within the budget", registry=r)
        self.waiting = Gauge("mediacore_edge_collapsed_waiters", "Distinct keys being fetched right now", registry=r)

    # Upstream --------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=self.config.max_connections, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=self.config.upstream_timeout),
                auto_decompress=True,
            )
        return self._session

    async def _fetch(self, path_qs: str) -> CachedResponse:
        last_error: Exception | None = None
        for upstream in self.config.upstreams:
            start = time.monotonic()
            self.upstream_requests.inc()
            try:
                async with self.session().get(upstream.rstrip("/") + path_qs,
                                              headers={"Accept-Encoding": "identity"}) as resp:
                    body = await resp.read()
                    if resp.status >= 500:
                        raise UpstreamError(f"{upstream} answered {resp.status}")
                    now = time.monotonic()
                    self.upstream_latency.observe(now - start)
                    headers = tuple((h, resp.headers[h]) for h in PASSED_HEADERS if h in resp.headers)
                    max_age = max_age_of(resp.headers.get("Cache-Control", ""))
                    if resp.status == 404:
                        max_age = min(max_age or self.config.negative_ttl, self.config.negative_ttl)
                    try:
                        upstream_age = float(resp.headers.get("Age", "0"))
                    except ValueError:
                        upstream_age = 0.0
                    return CachedResponse(resp.status, body, headers, now, max_age if max_age is not None else -1.0,
                                          upstream_age)
            except (aiohttp.ClientError, asyncio.TimeoutError, UpstreamError) as e:
                self.upstream_errors.inc()
                last_error = e
                log.warning("edge: upstream %s failed for %s: %s", upstream, path_qs, e or type(e).__name__)
        raise UpstreamError(str(last_error) or type(last_error).__name__)

    # Serving ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/metrics":
            return self.metrics_response()
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        key = cache_key(request)
        now = time.monotonic()
        entry = self.cache.get(key)
        if entry is not None and entry.fresh(now):
            self.hits.inc()
            return self.respond(request, entry, now, "HIT")
        self.misses.inc()
        before = self.collapser.collapsed
        try:
            entry = await self.collapser.run(key, lambda: self._store(key, request.path_qs))
        except UpstreamError as e:
            stale = self.cache.get(key)
            if stale is not None and stale.status == 200 and self._may_serve_stale(request.path, stale, time.monotonic()):
                self.stale.inc()
                return self.respond(request, stale, time.monotonic(), "STALE")
            raise web.HTTPBadGateway(text=f"upstream unavailable: {e}", headers=self._cors()) from e
        if self.collapser.collapsed > before:
            self.collapsed.inc()
        return self.respond(request, entry, time.monotonic(), "MISS")

    async def _store(self, key: str, path_qs: str) -> CachedResponse:
        self.waiting.set(self.collapser.inflight)
        if len(self.fetches) > 10_000:
            self.fetches.clear()
        self.fetches[key] += 1
        entry = await self._fetch(path_qs)
        if entry.max_age > 0 and entry.status in (200, 404):
            self.cache.put(key, entry)
        return entry

    def _may_serve_stale(self, path: str, entry: CachedResponse, now: float) -> bool:
        if path.endswith(".m3u8"):
            return now - entry.stored_at <= self.config.stale_playlist_seconds
        return True  # segments, parts and init segments never change

    def _cors(self) -> dict[str, str]:
        if not self.config.cors_origin:
            return {}
        return {"Access-Control-Allow-Origin": self.config.cors_origin,
                "Access-Control-Expose-Headers": "Age, Content-Length, Date"}

    def respond(self, request: web.Request, entry: CachedResponse, now: float, state: str) -> web.Response:
        headers = dict(entry.headers)
        headers.update(self._cors())
        headers["Age"] = str(int(entry.age(now)))
        headers["X-Cache"] = state
        content_type = headers.pop("Content-Type", "application/octet-stream")
        response = web.Response(status=entry.status, body=entry.body if request.method == "GET" else b"",
                                headers=headers, content_type=content_type.split(";")[0])
        if request.path.endswith(".m3u8") and "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        self.bytes_out.inc(len(entry.body))
        return response

    def metrics_response(self) -> web.Response:
        self.cache_bytes.set(self.cache.bytes)
        self.cache_entries.set(len(self.cache))
        self.evictions.set(self.cache.evictions)
        self.waiting.set(self.collapser.inflight)
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": "text/plain; version=0.0.4"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()


async def run_edge(config: EdgeConfig, host: str, port: int, node: EdgeNode | None = None) -> tuple[web.AppRunner, int]:
    node = node or EdgeNode(config)
    runner = web.AppRunner(node.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server
    assert server is not None
    bound = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    log.info("edge on %s:%d in front of %s", host, bound, ", ".join(config.upstreams))
    return runner, bound

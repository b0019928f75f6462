"""Settings of one edge node. Every bound the edge applies lives here or in `edge.cache`, once."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class EdgeConfig:
    upstreams: list[str] = field(default_factory=list)
    """Base URLs tried in order; another edge works too (tiers)."""
    cache_mb: int = 512
    """Cache budget in MiB (bodies plus headers)."""
    upstream_timeout: float = 15.0
    """Seconds for one upstream response; above the origin's 3 x TD blocking limit."""
    negative_ttl: float = 1.0
    """Seconds a 404 from upstream is reused: short, so a part or segment published just after is not hidden."""
    stale_playlist_seconds: float = 4.0
    """How old a cached playlist may be when served because the upstream failed."""
    max_connections: int = 256
    """Keep-alive connections to each upstream (the pool holds this many per upstream, in total too)."""
    upstream_keepalive: float = 60.0
    """Seconds an idle upstream connection stays open: well above a playlist reload interval, so reloads reuse it."""
    cors_origin: str = "*"
    """Access-Control-Allow-Origin sent with every response, so browser players on other sites can read them."""

"""Settings of one edge node. Every bound the edge applies lives here, or named once beside the code
that applies it (`edge.cache`, `edge.keys`, `edge.frontier`, `edge.policy`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class EdgeConfig:
    upstreams: list[str] = field(default_factory=list)
    """Base URLs tried in order; another edge works too (tiers), or several origins of an
    origin cluster (any of them redirects to a stream's owner)."""
    owner_ttl: float = 5.0
    """Seconds the edge remembers which origin owns a stream after following an origin
    cluster's redirect to it: later requests go straight there; then the origins are asked
    again (about the [cluster] ttl, the time a dead owner takes to leave the registry)."""
    cache_mb: int = 512
    """Cache budget in MiB (bodies plus headers)."""
    upstream_timeout: float = 15.0
    """Seconds for one upstream response; above the origin's 3 x TD blocking limit."""
    negative_ttl: float = 1.0
    """Seconds a 404 from upstream is reused: short, so a part or segment published just after is not hidden."""
    media_negative_ttl: float = 0.2
    """Seconds a 404 for a segment, part or init segment is reused at most: under one PART-TARGET
    (0.22 s by default), so a stored media 404 never covers a part that is published meanwhile.
    (A 404 for a segment or part not yet published is not stored at all: `edge.frontier`.)"""
    stale_playlist_seconds: float = 4.0
    """How old a cached playlist may be when served because the upstream failed."""
    max_connections: int = 256
    """Keep-alive connections to each upstream (the pool holds this many per upstream, in total too)."""
    max_blocked_per_client: int = 8
    """Distinct blocked playlist requests (`_HLS_msn`) one client may have in flight; past it 429.
    A viewer needs one per rendition it follows (two for video plus audio), and viewers behind one
    address share identical requests, so this refuses only clients that block on many parts at once."""
    max_blocked_upstream: int = 128
    """Distinct blocked playlist requests in flight to the upstream, never more than half of
    max_connections: each holds a connection up to 3 x TD, and the rest stay free for media.
    Past it 503."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses or networks (`10.0.0.0/8`) of proxies whose X-Forwarded-For names the client;
    from any other peer the header is ignored and the client is the peer address. A trusted peer
    that names no client (a downstream edge, which asks for all its viewers) is bounded only by
    max_blocked_upstream: list a mid tier's edges here."""
    upstream_keepalive: float = 60.0
    """Seconds an idle upstream connection stays open: well above a playlist reload interval, so reloads reuse it."""
    cors_origin: str = "*"
    """Access-Control-Allow-Origin sent with every response, so browser players on other sites can read them."""
    playback_secret: str = ""
    """The origin's `[auth] playback_secret`. With it the edge checks playback tokens itself (403 /
    410 without asking the upstream), keeps them out of its cache, asks the upstream with a
    short-lived token of its own and writes each viewer's token into the playlists it serves.
    Without it, responses the upstream marks as protected are refused (403): the edge could not
    tell who may see them."""
    upstream_token_ttl: int = 60
    """Seconds the token the edge signs for one upstream request is valid: well above the longest
    upstream request (upstream_timeout), short enough to be worthless if it leaks from a log."""
    worker: int = 0
    """This worker's index when the edge runs several (`mediacore edge --workers N`)."""
    peers: list[str] = field(default_factory=list)
    """Base URLs of every worker's loopback peer listener, by worker index; empty for a single
    process. A stream owned by another worker (`edge.workers`) is fetched from its listener."""

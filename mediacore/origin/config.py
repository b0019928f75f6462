"""The HTTP origin's settings, named once; the app's configuration uses these as its [http]
and [admin] sections."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_THUMBNAIL_WIDTH = 16
MAX_THUMBNAIL_WIDTH = 1920
"""Bounds of [http] thumbnail_width in pixels: a directory tile at least, full HD at most."""


@dataclass(slots=True)
class HttpConfig:
    cors_origin: str = "*"
    """Access-Control-Allow-Origin for playlists, media, /api/streams and /healthz; browsers on
    other origins play. Empty sends no CORS header at all."""
    segment_max_age: int = 3600
    """Cache lifetime of segments: URIs are unique per stream session, so they never change."""
    viewer_timeout: float = 15.0
    """Seconds after its last request that a viewer stops counting in /api/streams."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses (nginx, a CDN) whose X-Forwarded-For is believed; from anyone else the header
    is ignored, so one client cannot pose as a crowd of viewers. They are also exempt from
    max_connections_per_ip (one proxy carries many viewers)."""
    public_metrics: bool = False
    """Serve /metrics on the public HTTP port too. Off: Prometheus reads the admin listener,
    and the public port tells strangers nothing about streams, viewers or errors."""
    header_timeout: float = 10.0
    """Seconds a connection has to send a complete request head (from connecting, or from the
    first byte of a later request); aiohttp has no such deadline, so a slowloris peer dribbling
    a header byte at a time would hold its connection for ever. Past it the connection is
    closed and counted."""
    keepalive_timeout: float = 75.0
    """Seconds an idle keep-alive connection stays open between requests (above the 60 s
    nginx and most CDNs keep upstream connections, so the proxy closes first)."""
    max_connections_per_ip: int = 512
    """Connections open at once from one TCP peer address on the public port (never from
    X-Forwarded-For); an LL-HLS player holds a few, an office behind one NAT a few hundred,
    a mediacore edge up to 256 to its upstream (list edges and proxies in trusted_proxies to
    exempt them). Past it a new connection gets 429 and is closed. 0: no limit."""
    max_connections: int = 20000
    """Connections open at once on the public port, from everyone; past it a new connection
    gets 503 and is closed (keep it under the process's file descriptor limit). 0: no limit."""
    thumbnail_interval: float = 5.0
    """Seconds a stream's thumbnail (/live/STREAM/thumbnail.jpg) is kept before a request
    decodes the newest keyframe again; also its Cache-Control max-age. Nothing is decoded for
    a stream whose thumbnail nobody asks for."""
    thumbnail_width: int = 320
    """Width in pixels of thumbnails (height follows the picture's aspect ratio, even)."""


@dataclass(slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    """Address of the admin listener (/metrics, /healthz, /api): loopback, so only this
    machine reaches it unless the operator says otherwise."""
    port: int = 8090
    """Port of the admin listener; 0 picks a free one."""
    token: str = ""
    """Bearer token for the admin API's mutations (kick, key rotation and revocation, end) and
    for any admin request from a peer that is not loopback. Empty: mutations are refused (403)
    and only loopback peers may read. At least 16 characters when set."""

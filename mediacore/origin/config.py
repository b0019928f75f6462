"""The HTTP origin's settings, named once; the app's configuration uses this as its [http] section."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class HttpConfig:
    cors_origin: str = "*"
    """Access-Control-Allow-Origin for playlists and media; browsers on other origins play."""
    segment_max_age: int = 3600
    """Cache lifetime of segments: URIs are unique per stream session, so they never change."""
    viewer_timeout: float = 15.0
    """Seconds after its last request that a viewer stops counting in /api/streams."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Addresses (nginx, a CDN) whose X-Forwarded-For is believed; from anyone else the header
    is ignored, so one client cannot pose as a crowd of viewers."""

"""The HTTP origin's settings, named once; the app's configuration uses this as its [http] section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HttpConfig:
    cors_origin: str = "*"
    """Access-Control-Allow-Origin for playlists and media; browsers on other origins play."""
    segment_max_age: int = 3600
    """Cache lifetime of segments: URIs are unique per stream session, so they never change."""
    viewer_timeout: float = 15.0
    """Seconds after its last request that a viewer stops counting in /api/streams."""

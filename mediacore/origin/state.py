"""What the origin's routes read: the engine fills an OriginState and keeps it current.

The origin never imports the app; it sees the hub's streams, the stores and the viewer
tracker through this one object, and metrics through a narrow protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter, Histogram

from mediacore.access.tokens import PlaybackPolicy
from mediacore.hub.hub import Stream
from mediacore.model.media import Kind
from mediacore.origin.config import HttpConfig
from mediacore.origin.peers import WorkerRoutes
from mediacore.origin.thumbnails import Thumbnails
from mediacore.origin.viewers import ViewerTracker
from mediacore.store.hls import HlsStore
from mediacore.store.ll import LlRendition


class OriginMetrics(Protocol):
    @property
    def http_requests(self) -> Counter: ...

    @property
    def http_bytes(self) -> Counter: ...

    @property
    def ll_blocked_wake(self) -> Histogram: ...

    def render(self) -> bytes: ...


@dataclass(slots=True)
class OriginState:
    http: HttpConfig
    blocking_timeout_factor: float
    """A blocked LL-HLS request fails with 503 after this many target durations (B8)."""
    streams: Mapping[str, Stream]
    hls_stores: Mapping[str, HlsStore]
    ll_renditions: Mapping[str, dict[Kind, LlRendition]]
    viewers: ViewerTracker
    metrics: OriginMetrics
    base_url: Callable[[], str]
    clock: Callable[[], float]
    """Monotonic seconds: segment retention and blocking deadlines."""
    wall_clock: Callable[[], float]
    """Seconds since the epoch: Expires headers, uptimes and playback token expiry."""
    playback: PlaybackPolicy = field(default_factory=PlaybackPolicy)
    """Which streams need a signed playback token (`[auth] playback_streams`) and its secret."""
    failed: Mapping[str, str] = field(default_factory=dict)
    """Streams marked failed (a packager kept raising), with the reason: state "failed" in
    the API, listed by /healthz."""
    thumbnails: Thumbnails | None = None
    """Each stream's thumbnail (/live/STREAM/thumbnail.jpg); None: the route answers 404."""
    draining: bool = False
    """The server is shutting down (SIGTERM): /healthz answers 503 so balancers send no new
    viewers, while the ended playlists and their last segments are still served."""
    locate: Callable[[str], Awaitable[str | None]] | None = None
    """The origin cluster ([cluster] redis_url): the base URL of the node that owns a stream
    this node does not have, or None. A request for such a stream's playlists or media is
    redirected there (302). None: a single node, such requests get 404."""
    workers: WorkerRoutes | None = None
    """The other workers of this machine (`serve --workers N`): requests for a stream another
    worker owns are proxied there (http.worker_proxy). None: one process."""
    page_scripts: Mapping[str, Path] = field(default_factory=dict)
    """Scripts of the running plugins that the watch page loads (name -> file), served at
    /static/plugins/NAME."""

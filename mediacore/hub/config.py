"""The hub's bounds, named once; the app's configuration uses this as its [hub] section."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HubConfig:
    subscriber_queue_frames: int = 512
    """Frames a subscriber may lag before the hub drops for it; about 8 s at 30 fps + audio."""
    subscriber_queue_bytes: int = 32 * 1024 * 1024
    """Bytes a subscriber may lag before the hub drops for it."""
    max_streams: int = 500
    """Streams the hub holds at once (live, reconnecting or ended but still served): each has
    packagers, stores and metric series; past it a new name is refused."""
    metadata_per_second: int = 100
    """Timed metadata items (product cards, cue points) a stream accepts per second, from all
    sources together; twice the 50/s live commerce needs, and each item is listed in three
    playlists for the whole window, so a flood must be refused rather than served."""

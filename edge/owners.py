"""Which origin owns which stream, as far as the redirects this edge followed say (pure, `now`
passed in).

In an origin cluster any origin answers a request for another node's stream with a 302 to
the owner. The edge follows it and remembers the owner's base URL for `owner_ttl` seconds,
so the next requests of that stream go straight there; after that (or as soon as the owner
fails) it asks its configured origins again, which redirect to wherever the stream is now.
Cache and collapsing keys stay the request's path: a stream that moves keeps its keys.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import lru

MAX_STREAMS = 4096
"""Streams whose owner is remembered (least recently learnt forgotten first)."""


def base_of(url: str) -> str | None:
    """`scheme://host:port` of an absolute http(s) URL; None for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


class Owners:
    def __init__(self, ttl: float, max_streams: int = MAX_STREAMS) -> None:
        self.ttl = ttl
        self._owners: lru.LRU = lru.LRU(max_streams)

    def __len__(self) -> int:
        return len(self._owners)

    def learn(self, stream: str, base: str, now: float) -> None:
        self._owners[stream] = (base, now + self.ttl)

    def get(self, stream: str, now: float) -> str | None:
        known = self._owners.get(stream)
        if known is None:
            return None
        base, until = known
        if now >= until:
            del self._owners[stream]
            return None
        return str(base)

    def forget(self, stream: str) -> None:
        """The owner failed: ask the origins again."""
        if stream in self._owners:
            del self._owners[stream]

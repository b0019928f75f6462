"""Counts viewers as distinct clients that fetched a stream's playlist or media recently, and
tells listeners when one joins (first request) and leaves (no request for `timeout`, noticed
by `count()` or `sweep()`). Time (`now`, monotonic seconds) is passed in."""

from __future__ import annotations

from collections.abc import Callable

ViewerListener = Callable[[str, str], None]
"""Called with (stream, client key)."""


class ViewerTracker:
    def __init__(self, timeout: float = 15.0, max_per_stream: int = 1_000_000) -> None:
        self.timeout = timeout
        self.max_per_stream = max_per_stream
        self._seen: dict[str, dict[str, float]] = {}
        self.on_join: list[ViewerListener] = []
        self.on_leave: list[ViewerListener] = []

    def record(self, stream: str, client: str, now: float) -> None:
        clients = self._seen.setdefault(stream, {})
        if client not in clients:
            if len(clients) >= self.max_per_stream:
                self._expire(stream, clients, now)
                if len(clients) >= self.max_per_stream:
                    return
            clients[client] = now
            for listener in self.on_join:
                listener(stream, client)
            return
        clients[client] = now

    def _expire(self, stream: str, clients: dict[str, float], now: float) -> None:
        for key, seen in list(clients.items()):
            if now - seen > self.timeout:
                del clients[key]
                for listener in self.on_leave:
                    listener(stream, key)

    def count(self, stream: str, now: float) -> int:
        clients = self._seen.get(stream)
        if not clients:
            return 0
        self._expire(stream, clients, now)
        return len(clients)

    def sweep(self, now: float) -> None:
        """Expire every stream's silent viewers (the engine calls this on a timer, so leaves
        are heard within a fraction of `timeout` even when nobody asks for a count)."""
        for stream, clients in list(self._seen.items()):
            self._expire(stream, clients, now)

    def forget(self, stream: str) -> None:
        """The stream is gone: its viewers leave with it."""
        clients = self._seen.pop(stream, None) or {}
        for key in clients:
            for listener in self.on_leave:
                listener(stream, key)

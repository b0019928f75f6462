"""Counts viewers as distinct clients that fetched a stream's playlist or media recently.
Time (`now`, monotonic seconds) is passed in."""

from __future__ import annotations


class ViewerTracker:
    def __init__(self, timeout: float = 15.0, max_per_stream: int = 1_000_000) -> None:
        self.timeout = timeout
        self.max_per_stream = max_per_stream
        self._seen: dict[str, dict[str, float]] = {}

    def record(self, stream: str, client: str, now: float) -> None:
        clients = self._seen.setdefault(stream, {})
        if client not in clients and len(clients) >= self.max_per_stream:
            self._expire(clients, now)
            if len(clients) >= self.max_per_stream:
                return
        clients[client] = now

    def _expire(self, clients: dict[str, float], now: float) -> None:
        for key, seen in list(clients.items()):
            if now - seen > self.timeout:
                del clients[key]

    def count(self, stream: str, now: float) -> int:
        clients = self._seen.get(stream)
        if not clients:
            return 0
        self._expire(clients, now)
        return len(clients)

    def forget(self, stream: str) -> None:
        self._seen.pop(stream, None)

"""How often a stream's packager may fail and be restarted, sans-I/O: at most `limit`
restarts within any `window` seconds per (stream, output); the next error within the window
fails the stream ([hls] max_packager_restarts, packager_restart_window).

The engine asks `allow()` when a packager task ends with an exception and applies the
answer (restart, or mark the stream failed); time (`now`, monotonic seconds) is passed in.
"""

from __future__ import annotations

from collections import deque


class RestartBudget:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._restarts: dict[tuple[str, str], deque[float]] = {}

    def allow(self, name: str, output: str, now: float) -> bool:
        """May the `output` packager of stream `name`, which just failed, restart? A yes is
        counted as a restart at `now`."""
        times = self._restarts.setdefault((name, output), deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True

    def restarts(self, name: str, output: str) -> int:
        """Restarts counted within the window as of the last `allow()`."""
        return len(self._restarts.get((name, output), ()))

    def forget(self, name: str) -> None:
        """The stream starts afresh (or is forgotten): its past errors no longer count."""
        for key in [k for k in self._restarts if k[0] == name]:
            del self._restarts[key]

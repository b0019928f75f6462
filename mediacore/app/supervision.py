"""How often something that failed may be restarted, sans-I/O: at most `limit` restarts
within any `window` seconds per (name, output); the next failure within the window is final.

One rule for the engine's packagers ([hls] max_packager_restarts, packager_restart_window:
the engine asks `allow()` when a packager task ends with an exception and restarts it or
marks the stream failed) and for worker processes, of `serve --workers` and of `edge
--workers` alike (WORKER_RESTARTS per WORKER_RESTART_WINDOW). Time (`now`, monotonic
seconds) is passed in.
"""

from __future__ import annotations

from collections import deque

WORKER_RESTARTS = 5
WORKER_RESTART_WINDOW = 60.0
"""A worker process that exits unexpectedly is restarted, at most this many times within
this many seconds (a worker that cannot start would otherwise spin)."""


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

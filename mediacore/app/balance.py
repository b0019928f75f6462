"""Which worker gets the next publisher connection, sans-I/O (`now` passed in).

The parent of `mediacore serve --workers N` accepts every ingest connection and hands it to
one worker. A worker's load is the larger of the streams it owns now and the connections
handed to it within the last `HANDOFF_SETTLE` seconds: a connection claims its stream name
only after its handshake and publish command, so for that long the owner files do not show
it yet, while counting both would count a publisher twice once it has claimed. Ties go to
the lowest index, so the spread is deterministic (four publishers on two workers: two each).

A publisher that reconnects while its stream is still held by the worker it left (the
reconnect window, [hls] end_grace) may land on another worker, which refuses the name and
tells the parent who holds it (`prefer`): the next connection from that address goes to
the holder, once, within PREFERENCE_TTL, so the encoder's retry resumes its stream there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping

HANDOFF_SETTLE = 5.0
"""Seconds a handed connection counts as load before its stream shows in the owner files:
longer than an encoder's RTMP handshake, connect and publish on a busy machine."""
PREFERENCE_TTL = 30.0
"""Seconds a refused publisher's address is sent to the worker holding its stream: longer
than encoders wait before retrying (OBS: 2-10 s), short enough not to pin the address."""


class Balancer:
    def __init__(self, settle: float = HANDOFF_SETTLE) -> None:
        self.settle = settle
        self._handed: dict[int, deque[float]] = {}
        self._preferred: dict[str, tuple[int, float]] = {}

    def _recent(self, worker: int, now: float) -> int:
        times = self._handed.get(worker)
        if times is None:
            return 0
        while times and times[0] <= now - self.settle:
            times.popleft()
        return len(times)

    def load(self, worker: int, owned: Mapping[int, int], now: float) -> int:
        return max(owned.get(worker, 0), self._recent(worker, now))

    def prefer(self, address: str, worker: int, now: float) -> None:
        """The next connection from `address` goes to `worker` (its stream is held there)."""
        self._preferred = {a: p for a, p in self._preferred.items() if now - p[1] < PREFERENCE_TTL}
        self._preferred[address] = (worker, now)

    def pick(self, live: Collection[int], owned: Mapping[int, int], now: float, address: str = "") -> int | None:
        """The worker (one of `live`) to hand the next connection from `address` to, counted
        as handed at `now`; None when no worker is live. `owned` counts each worker's streams."""
        if not live:
            return None
        preferred, at = self._preferred.pop(address, (-1, 0.0))
        if preferred in live and now - at < PREFERENCE_TTL:
            worker = preferred
        else:
            worker = min(sorted(live), key=lambda w: self.load(w, owned, now))
        self._handed.setdefault(worker, deque()).append(now)
        return worker

    def forget(self, worker: int) -> None:
        """The worker died: what was handed to it is gone with it."""
        self._handed.pop(worker, None)

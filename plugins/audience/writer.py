"""The bounded, non-blocking event writer: `offer()` never waits (the media path and the
request path call it); a task drains the queue in batches into a sink (the store). When the
queue is full the event is dropped and counted; a batch the sink refuses is retried a few
times, then dropped and counted."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from . import limits
from .events import Event

log = logging.getLogger("mediacore.audience")

Sink = Callable[[list[Event]], Awaitable[None]]


class EventWriter:
    def __init__(self, sink: Sink, capacity: int, batch: int, retry_delay: float = 0.5) -> None:
        self.sink = sink
        self.capacity = capacity
        self.batch = batch
        self.retry_delay = retry_delay
        self.accepted = 0
        self.dropped = 0
        """Events refused because the queue was full."""
        self.written = 0
        self.failed = 0
        """Events the sink refused SINK_RETRIES times."""
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, event: Event) -> bool:
        """Queue `event`; False (and counted) when the queue is full. Never blocks."""
        return self.offer_many([event]) == 1

    def offer_many(self, events: list[Event]) -> int:
        """Queue the first of `events` that fit; returns how many (the rest are dropped and
        counted). Never blocks."""
        room = max(0, self.capacity - len(self._queue))
        taken = events if len(events) <= room else events[:room]
        self.dropped += len(events) - len(taken)
        if taken:
            self._queue.extend(taken)
            self.accepted += len(taken)
            self._idle.clear()
            self._wake.set()
        return len(taken)

    def forget(self, user: str) -> None:
        """Drop the queued events of `user` (their data is being deleted)."""
        self._queue = deque(e for e in self._queue if e.user != user)

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            await self._store(batch)

    async def _store(self, batch: list[Event]) -> None:
        for attempt in range(limits.SINK_RETRIES):
            try:
                await self.sink(batch)
                self.written += len(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audience: storing %d events failed (attempt %d)", len(batch), attempt + 1)
                await asyncio.sleep(self.retry_delay * (2**attempt))
        self.failed += len(batch)

    async def flush(self) -> None:
        """Wait until every queued event went to the sink (the drain task must run)."""
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            if self._queue:
                await asyncio.sleep(0)

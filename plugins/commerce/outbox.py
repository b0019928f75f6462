"""The order webhook: hands every order in the store's outbox to the shop backend.

At least once: an entry leaves the outbox only after the backend answered 2xx, so a crash,
a restart or a backend outage delays orders but never loses one (the outbox is in the
store, written in the purchase's own transaction). Each POST carries the order JSON (with
`order_id`) and an `Idempotency-Key: ORDER_ID` header, so the receiver drops repeats.
Failed entries are retried with exponential backoff, capped; the backoff state is memory
only, so after a restart every waiting entry is tried at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from . import limits
from .model import OutboxEntry
from .store import CommerceStore

log = logging.getLogger("mediacore.commerce.outbox")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    """Where orders are POSTed (`[commerce] order_webhook`)."""
    initial_backoff: float = 1.0
    """Seconds before the first retry of a failed entry; doubled after each failure."""
    max_backoff: float = 300.0
    """Cap of the backoff, seconds: a backend back after an outage gets its orders within
    five minutes."""
    request_timeout: float = 10.0
    """Seconds one POST may take before it counts as failed."""
    poll_interval: float = 1.0
    """Seconds between looks at an empty (or entirely backing-off) outbox."""
    concurrency: int = 8
    """POSTs in flight at once, so one slow backend answer does not hold up the batch."""
    batch: int = limits.OUTBOX_BATCH


def backoff_delay(failures: int, initial: float, cap: float) -> float:
    """Seconds to wait after the `failures`-th consecutive failure (1, 2, ...)."""
    return min(cap, initial * 2.0 ** min(failures - 1, 62))


@dataclass(slots=True)
class _Retry:
    failures: int
    due: float


class OutboxDeliverer:
    """Owns one task (`start()` / `stop()`); `deliver_once()` runs one round (tests, tools).
    `clock` is monotonic seconds, the loop's clock by default."""

    def __init__(
        self, store: CommerceStore, config: WebhookConfig, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self._retries: dict[str, _Retry] = {}
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed_attempts = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="commerce-outbox")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    wait = await self.deliver_once(session)
                except Exception:
                    log.exception("order outbox: round failed")
                    wait = self.config.poll_interval
                if wait > 0:
                    await asyncio.sleep(wait)

    async def deliver_once(self, session: aiohttp.ClientSession) -> float:
        """One round: POSTs every due entry of the oldest batch, acks the delivered ones.
        Returns how long to wait before the next round (0: go on at once)."""
        entries = await self.store.outbox_fetch(self.config.batch)
        present = {e.id for e in entries}
        self._retries = {k: v for k, v in self._retries.items() if k in present}
        now = self._now()
        due = [e for e in entries if e.id not in self._retries or self._retries[e.id].due <= now]
        if not due:
            if not entries:
                return self.config.poll_interval
            earliest = min(r.due for r in self._retries.values())
            return max(0.0, min(self.config.poll_interval, earliest - now))
        gate = asyncio.Semaphore(self.config.concurrency)

        async def post(entry: OutboxEntry) -> bool:
            async with gate:
                return await self._post(session, entry)

        results = await asyncio.gather(*(post(e) for e in due))
        done = [e.id for e, ok in zip(due, results) if ok]
        if done:
            await self.store.outbox_ack(done)
            self.delivered += len(done)
        now = self._now()
        for entry, ok in zip(due, results):
            if ok:
                self._retries.pop(entry.id, None)
                continue
            self.failed_attempts += 1
            failures = self._retries[entry.id].failures + 1 if entry.id in self._retries else 1
            delay = backoff_delay(failures, self.config.initial_backoff, self.config.max_backoff)
            self._retries[entry.id] = _Retry(failures, now + delay)
        return 0.0 if done else max(0.0, min(self.config.poll_interval, self._next_due(now) - now))

    def _next_due(self, now: float) -> float:
        return min((r.due for r in self._retries.values()), default=now + self.config.poll_interval)

    async def _post(self, session: aiohttp.ClientSession, entry: OutboxEntry) -> bool:
        headers = {"Content-Type": "application/json", "Idempotency-Key": entry.order_id}
        try:
            async with session.post(self.config.url, data=entry.payload, headers=headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return True
                problem = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        failures = self._retries[entry.id].failures + 1 if entry.id in self._retries else 1
        if failures & (failures - 1) == 0:  # 1, 2, 4, 8 ... so an outage does not flood the log
            log.warning("order webhook: order %s not delivered (attempt %d): %s", entry.order_id, failures, problem)
        return False

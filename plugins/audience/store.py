"""What the audience plugin needs of an event store (SQLite on one node, Redis for many)."""

from __future__ import annotations

from typing import Protocol

from .events import Event


class EventStore(Protocol):
    async def append(self, events: list[Event]) -> list[Event]:
        """Store `events`; returns those stored now (an id already stored is skipped). A
        store that applies asynchronously (Redis: through the consumer group) returns []."""
        ...

    async def load(self, since: float) -> list[Event]:
        """Every stored event with ts ≥ since, oldest first."""
        ...

    async def delete_user(self, user: str) -> int:
        """Remove every event and model row of `user`; returns the events removed."""
        ...

    async def purge(self, before: float) -> int:
        """Remove events older than `before` (the retention window); returns how many."""
        ...

    async def save_segments(self, segments: dict[str, int]) -> None:
        """Model rows: each user's segment (replaces the previous ones)."""
        ...

    async def count(self, user: str | None = None) -> int:
        """Stored events (of `user`): for tests and the deletion check."""
        ...

    async def close(self) -> None: ...

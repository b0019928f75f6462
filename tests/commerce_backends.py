"""Both commerce backends behind one handle for parametrised tests: `Backend.open()` gives a
store over the same state each time (the same SQLite file, or the same Redis prefix through
a new client), so a test can close it and reopen it as a restarted server would."""

from __future__ import annotations

import uuid
from pathlib import Path

from plugins.commerce.flow import StoreBase
from plugins.commerce.redis_store import RedisCommerceStore
from plugins.commerce.sqlite_store import SqliteCommerceStore

BACKENDS = ("sqlite", "redis")

T0 = 1_800_000_000.0
"""The injected `now` of the tests (2027-01-15): no test reads the wall clock for store logic."""


class Backend:
    def __init__(self, kind: str, directory: Path, redis_url: str | None) -> None:
        self.kind = kind
        self.path = directory / "commerce.db"
        self.redis_url = redis_url
        self.prefix = f"test:{uuid.uuid4().hex}:"

    async def open(self) -> StoreBase:
        if self.kind == "sqlite":
            return await SqliteCommerceStore.open(self.path)
        assert self.redis_url is not None
        return RedisCommerceStore.from_url(self.redis_url, prefix=self.prefix)

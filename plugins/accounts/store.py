"""The users: one SQLite file (WAL) under the plugin's data directory.

One dedicated thread owns the connection (a single-thread executor): SQLite calls never run
on the event loop, and writes serialise. A username is unique case-insensitively, so "Alice"
and "alice" cannot be two people in a chat."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mediacore.plugins.api import Role

T = TypeVar("T")

BUSY_TIMEOUT = 10.0
"""Seconds a write waits for another process holding the file's write lock (a `manage`
command beside a running server) before failing."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY COLLATE NOCASE,
    password TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'moderator', 'host', 'admin')),
    created_at REAL NOT NULL
);
"""


class UserExists(Exception):
    """A user of that name (compared case-insensitively) exists already."""


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password: str
    """The stored hash (`passwords.hash_password`)."""
    role: Role


class UserStore:
    """Synchronous core; `AsyncUserStore` runs it on its own thread."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def add(self, username: str, password_hash: str, role: Role, now: float) -> None:
        try:
            self.db.execute(
                "INSERT INTO users (username, password, role, created_at) VALUES (?, ?, ?, ?)",
                (username, password_hash, role.label, now),
            )
        except sqlite3.IntegrityError as e:
            raise UserExists(username) from e

    def get(self, username: str) -> User | None:
        row = self.db.execute("SELECT username, password, role FROM users WHERE username = ?", (username,)).fetchone()
        return None if row is None else User(row[0], row[1], Role.parse(row[2]))

    def set_password(self, username: str, password_hash: str) -> bool:
        cur = self.db.execute("UPDATE users SET password = ? WHERE username = ?", (password_hash, username))
        return cur.rowcount == 1

    def set_role(self, username: str, role: Role) -> bool:
        cur = self.db.execute("UPDATE users SET role = ? WHERE username = ?", (role.label, username))
        return cur.rowcount == 1

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def close(self) -> None:
        self.db.close()


class AsyncUserStore:
    def __init__(self, path: Path) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accounts-db")
        self._path = path
        self._store: UserStore | None = None

    async def _run(self, fn: Callable[[UserStore], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._require()))

    def _require(self) -> UserStore:
        if self._store is None:
            self._store = UserStore(self._path)
        return self._store

    async def open(self) -> None:
        await self._run(lambda s: None)

    async def add(self, username: str, password_hash: str, role: Role, now: float) -> None:
        await self._run(lambda s: s.add(username, password_hash, role, now))

    async def get(self, username: str) -> User | None:
        return await self._run(lambda s: s.get(username))

    async def set_password(self, username: str, password_hash: str) -> bool:
        return await self._run(lambda s: s.set_password(username, password_hash))

    async def close(self) -> None:
        if self._store is not None:
            await self._run(lambda s: s.close())
        self._executor.shutdown(wait=True)

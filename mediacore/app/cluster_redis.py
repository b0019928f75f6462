"""The asyncio shell of the cluster registry (`mediacore.app.cluster`): Redis commands with a
deadline, and the renewal loop the engine owns.

Nothing here blocks the media path: every command is bounded by `[cluster] redis_timeout`,
and a Redis that does not answer is logged (at the 1st, 2nd, 4th ... failure in a row) and
tried again next round, while the node goes on serving what it has. A publish whose claim
gets no answer is allowed (the node acts as if alone); if another node took the name
meanwhile, the first round after Redis is back finds the conflict and this node gives the
name up (`on_conflict`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mediacore.app.cluster import (
    CLAIM_SCRIPT,
    POSITION_MEMORY,
    RELEASE_SCRIPT,
    Conflict,
    Position,
    Registry,
    position_key,
    stream_key,
)
from mediacore.app.config import ClusterConfig

log = logging.getLogger("mediacore.cluster")

REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class ClusterNode:
    def __init__(
        self,
        config: ClusterConfig,
        node_url: str,
        serving: Callable[[], Iterable[str]],
        on_conflict: Callable[[Conflict], None],
        positions: Callable[[], Mapping[str, Position]] = dict,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`serving` lists the streams this node owns now (the hub's names); `on_conflict` is
        told of each one another node turns out to hold; `positions` says where the playlists
        of the streams it serves stand."""
        self.config = config
        self.node_url = node_url.rstrip("/")
        self.registry = Registry(self.node_url, config.ttl)
        self.serving = serving
        self.on_conflict = on_conflict
        self.positions = positions
        self.clock = clock
        timeout = config.redis_timeout
        self.redis: aioredis.Redis = aioredis.from_url(
            config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._claim = self.redis.register_script(CLAIM_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)

    def _key(self, name: str) -> str:
        return stream_key(self.config.key_prefix, name)

    async def _bounded(self, call: Any) -> Any:
        async with asyncio.timeout(self.config.redis_timeout):
            return await call

    async def claim(self, name: str) -> str | None:
        """Claim `name` for a publish on this node: None when this node holds it now (or
        Redis did not answer: the node acts alone), else the URL of the node that holds it."""
        try:
            owners = await self._bounded(
                self._claim(keys=[self._key(name)], args=[self.node_url, int(self.config.ttl * 1000)])
            )
        except REDIS_ERRORS as e:
            log.warning("cluster: could not claim stream %s in the registry (%r); allowing the publish", name, e)
            return None
        owner = str(owners[0])
        if not self.registry.claimed(name, owner, self.clock()):
            return owner
        try:
            found = Position.decode(await self._bounded(self.redis.get(position_key(self.config.key_prefix, name))))
        except REDIS_ERRORS as e:
            log.warning("cluster: could not read where stream %s stood (%r); its playlists start afresh", name, e)
            found = None
        if found is not None:
            self.registry.resume[name] = found
        return None

    def resume_position(self, name: str) -> Position | None:
        """Where `name`'s playlists stood when the registry last heard of it (from the claim of
        this publish), once: the stream continues from there."""
        return self.registry.resume.pop(name, None)

    async def locate(self, name: str) -> str | None:
        """The base URL of the node that owns `name`, if another node does (None: nobody, this
        node, or Redis did not answer)."""
        try:
            owner = await self._bounded(self.redis.get(self._key(name)))
        except REDIS_ERRORS as e:
            log.warning("cluster: could not look up stream %s in the registry: %r", name, e)
            return None
        return owner if owner and owner != self.node_url else None

    async def renew_once(self) -> None:
        """One round: claim or renew every stream served, release the ones forgotten."""
        todo = self.registry.round(self.serving(), self.clock())
        owners: list[str] = []
        try:
            if todo.renew:
                keys = [self._key(name) for name in todo.renew]
                owners = [
                    str(o)
                    for o in await self._bounded(
                        self._claim(keys=keys, args=[self.node_url, int(self.config.ttl * 1000)])
                    )
                ]
            if todo.release:
                keys = [self._key(name) for name in todo.release]
                await self._bounded(self._release(keys=keys, args=[self.node_url]))
        except REDIS_ERRORS as e:
            if self.registry.failed():
                log.warning(
                    "cluster: registry round failed (%d in a row; registrations lapse after %g s): %r",
                    self.registry.failures,
                    self.config.ttl,
                    e,
                )
            return
        if self.registry.failures:
            log.info("cluster: registry reachable again")
        conflicts = self.registry.applied(todo, owners)
        await self._write_positions()
        for conflict in conflicts:
            log.error(
                "cluster: stream %s is registered to %s, not this node; giving it up", conflict.name, conflict.owner
            )
            self.on_conflict(conflict)

    async def _write_positions(self) -> None:
        due = self.registry.positions_due(self.positions())
        if not due:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, position in due.items():
                    key = position_key(self.config.key_prefix, name)
                    pipe.set(key, position.encode(), px=int(POSITION_MEMORY * 1000))
                await self._bounded(pipe.execute())
        except REDIS_ERRORS as e:
            log.warning("cluster: could not record where %d streams stand: %r", len(due), e)
            return
        self.registry.written.update(due)

    async def run(self) -> None:
        """Renew every `[cluster] renew` seconds until cancelled."""
        while True:
            try:
                await self.renew_once()
            except Exception as e:  # one bad round must not end the registrations
                log.error("cluster: registry round raised: %r", e, exc_info=e)
            await asyncio.sleep(self.config.renew)

    async def close(self, release: bool) -> None:
        """Stop using Redis; with `release`, first delete this node's registrations (a clean
        shutdown hands its names over at once instead of after ttl)."""
        if release and self.registry.registered:
            keys = [self._key(name) for name in sorted(self.registry.registered)]
            try:
                await self._bounded(self._release(keys=keys, args=[self.node_url]))
            except REDIS_ERRORS as e:
                log.warning("cluster: could not release this node's registrations: %r", e)
        await self.redis.aclose()

"""Two full engines with the audience plugin on one real redis-server: events posted over
`POST /api/audience/events` to both nodes (some sent to both, as a client retrying on the
other node does), one node stopped mid-way while entries it had read were not acknowledged
yet, then restarted with its name → every event is counted exactly once: once in the
canonical log, once in the stream of applied events every node's recommender reads, and
once by the other node's recommender.

The same check is run on two naive stores and must catch each: one that does not take back
its pending entries at restart (they would wait for another node's claim, 60 s), one that
applies an id again when it is delivered again."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from commerce_http import SECRET, auth, call
from conftest import another_node, until

from benchmarks.servers import RedisServer
from mediacore.app.config import Config
from mediacore.app.engine import Engine
from mediacore.plugins.api import PluginContext
from plugins.audience.events import Event, Kind, pseudonym
from plugins.audience.plugin import AudiencePlugin
from plugins.audience.redis_store import GROUP, RedisEventStore
from plugins.audience.settings import AudienceSettings
from plugins.audience.store import EventStore

USER_KEY = "a-user-key-shared-by-every-node"
PREFIX = "nodes:"
SETTLE = 30.0
"""Seconds the correct store gets to apply everything (a loaded CI machine)."""
NAIVE_SETTLE = 5.0
"""Seconds the store that forgets its pending entries gets: it never settles (they stay
pending until another node's claim after 60 s)."""


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class ForgetsPending(RedisEventStore):
    """Naive: after a restart it reads only new entries, never the ones it had read before."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._pending_done = True


class NotIdempotent(RedisEventStore):
    """Naive: applies every delivered entry, also an id it applied before."""

    async def apply(self, events: list[Event]) -> int:
        async with self.client.pipeline(transaction=True) as pipe:
            for e in events:
                pipe.hset(self.ev, e.id, e.to_json())
                pipe.zadd(self.log, {e.id: e.ts})
                pipe.sadd(self.user_key(e.user), e.id)
                pipe.xadd(self.applied_stream, {"e": e.to_json()})
            await pipe.execute()
        self.applied += len(events)
        return len(events)


class Plugin(AudiencePlugin):
    """The audience plugin with the store class of the run (the real one unless naive)."""

    def __init__(self, store_class: type[RedisEventStore]) -> None:
        super().__init__()
        self.store_class = store_class

    async def _open_store(self, context: PluginContext, settings: AudienceSettings) -> EventStore:
        store = self.store_class.from_url(settings.redis_url, settings.key_prefix, settings.node_id)
        await store.ensure_group()
        return store


def node_config(config: Config, redis: RedisServer, name: str) -> Config:
    c = another_node(config, name)
    c.auth.jwt_secret = SECRET
    c.plugin_settings = {
        "audience": {
            "redis_url": redis.url,
            "key_prefix": PREFIX,
            "node_id": name,
            "user_key": USER_KEY,
            "update_interval": 0.2,
            "model_interval": 3600.0,
        }
    }
    return c


@asynccontextmanager
async def node(config: Config, store_class: type[RedisEventStore]) -> AsyncIterator[tuple[Engine, Plugin]]:
    engine = Engine(config)
    plugin = Plugin(store_class)
    engine.plugins = [plugin]
    await engine.start()
    try:
        yield engine, plugin
    finally:
        await engine.stop()


def batch(first: int, n: int) -> list[dict[str, object]]:
    """Events with client ids ev-FIRST.. (likes and orders of viewer v{i % 7})."""
    return [
        {"id": f"ev-{i}", "kind": "like", "stream": f"s{i % 5}"}
        if i % 2
        else {"id": f"ev-{i}", "kind": "order", "stream": f"s{i % 5}", "product": f"p{i % 11}", "value": 100}
        for i in range(first, first + n)
    ]


async def post(engine: Engine, events: list[dict[str, object]]) -> None:
    by_user: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
    for e in events:
        by_user[f"v{int(str(e['id'])[3:]) % 7}"].append(e)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{engine.http_port}") as http:
        for user, items in by_user.items():
            for i in range(0, len(items), 100):
                status, body = await call(
                    http, "POST", "/api/audience/events", auth(user), json={"events": items[i : i + 100]}
                )
                assert status == 202 and body["dropped"] == 0, body


async def crash_window(client: Any, events: list[dict[str, object]]) -> None:
    """The state a node leaves when it dies between reading entries and acknowledging them:
    its writer had added them to the ingest stream and its consumer ("a") had read them. One
    transaction, so the other node's blocked read cannot take them first."""
    async with client.pipeline(transaction=True) as pipe:
        for e in events:
            sub = f"v{int(str(e['id'])[3:]) % 7}"
            user = pseudonym(USER_KEY.encode(), sub)
            kind = Kind(str(e["kind"]))
            event = Event(str(e["id"]), kind, user, time.time(), str(e["stream"]), str(e.get("product", "")))
            pipe.xadd(PREFIX + "in", {"u": user, "e": event.to_json()})
        pipe.xreadgroup(GROUP, "a", {PREFIX + "in": ">"}, count=len(events))
        replies = await pipe.execute()
    assert len(replies[-1][0][1]) == len(events)


async def settled(client: Any, timeout: float) -> bool:
    """True once every ingest entry was delivered and acknowledged (False after `timeout`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        (group,) = await client.xinfo_groups(PREFIX + "in")
        if group["lag"] == 0 and group["pending"] == 0:
            return True
        await asyncio.sleep(0.1)
    return False


async def counted(client: Any) -> collections.Counter[str]:
    """How often each event id is in the stream of applied events (what recommenders read)."""
    entries = await client.xrange(PREFIX + "applied", "-", "+")
    return collections.Counter(Event.from_json(fields[b"e"]).id for _, fields in entries)


@dataclasses.dataclass
class Outcome:
    settled: bool
    """Every ingest entry delivered and acknowledged within the time given."""
    twice: set[str]
    """Ids in the applied stream more than once."""
    missing: set[str]
    """Ids posted and never applied."""

    @property
    def exactly_once(self) -> bool:
        return self.settled and not self.twice and not self.missing


def check(counts: collections.Counter[str], expected: set[str], settled: bool) -> Outcome:
    return Outcome(settled, {i for i, n in counts.items() if n > 1}, expected - set(counts))


async def scenario(config: Config, redis: RedisServer, store_class: type[RedisEventStore], settle: float) -> Outcome:
    """Runs the two-node story; returns what the exactly-once check found."""
    client = RedisEventStore.from_url(redis.url, PREFIX).client
    a_config, b_config = node_config(config, redis, "a"), node_config(config, redis, "b")
    expected = {f"ev-{i}" for i in range(700)}
    try:
        async with node(b_config, store_class) as (b, b_plugin):
            async with node(a_config, store_class) as (a, _):
                await post(a, batch(0, 200))
                await post(b, batch(200, 200))
                await post(b, batch(100, 50))  # a client retrying on the other node: same ids
            # Node a is stopped (its writer flushed what it had accepted); it died with entries
            # read and not acknowledged: ev-400..499 only there, ev-500..549 also re-sent to b.
            await crash_window(client, batch(400, 150))
            await post(b, batch(500, 100))
            async with node(a_config, store_class) as (a, a_plugin):
                await post(a, batch(600, 100))
                await post(a, batch(0, 20))  # and once more, after the restart
                # Count only once both writers handed everything to Redis and the group has
                # delivered and acknowledged it all: counting first reads a half-applied stream.
                assert a_plugin.writer is not None and b_plugin.writer is not None
                await asyncio.gather(a_plugin.writer.flush(), b_plugin.writer.flush())
                is_settled = await settled(client, settle)
                outcome = check(await counted(client), expected, is_settled)
                if outcome.exactly_once:
                    assert await client.zcard(PREFIX + "log") == len(expected)
                    # node b's recommender reads every applied event once
                    await until(lambda: b_plugin.recommender.events_applied == len(expected), 30, "b's models")
                return outcome
    finally:
        await client.aclose()


async def test_two_nodes_count_every_event_once_across_a_restart(config, redis):
    outcome = await scenario(config, redis, RedisEventStore, SETTLE)
    assert outcome.exactly_once, outcome


async def test_the_check_catches_a_store_that_forgets_its_pending_entries(config, redis):
    outcome = await scenario(config, redis, ForgetsPending, NAIVE_SETTLE)
    assert not outcome.exactly_once
    assert {f"ev-{i}" for i in range(400, 500)} <= outcome.missing, outcome


async def test_the_check_catches_a_store_that_applies_an_id_twice(config, redis):
    outcome = await scenario(config, redis, NotIdempotent, SETTLE)  # it settles, wrongly
    assert not outcome.exactly_once
    assert outcome.twice, outcome

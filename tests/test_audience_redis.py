"""The Redis event store against a real redis-server: two nodes append to one Stream, each
consumes through the consumer group; a node that read entries and died before XACK takes
them back at restart; every event is applied exactly once (by id) although some were sent
twice; both nodes' recommenders see every applied event; deleting a user removes every
event, stream entry and model row of theirs."""

from __future__ import annotations

import pytest

from benchmarks.servers import running_redis
from plugins.audience.events import Event, Kind
from plugins.audience.redis_store import GROUP, RedisEventStore

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


def ev(i: int, user: str) -> Event:
    return Event(f"e{i}", Kind.ORDER, user, NOW + i, "s1", f"p{i % 7}")


async def drain(*stores: RedisEventStore) -> None:
    while sum([await s.consume(block_ms=50) for s in stores]):
        pass


async def test_two_nodes_and_a_restart_apply_every_event_exactly_once(redis_url):
    prefix = "t1:"
    a = RedisEventStore.from_url(redis_url, prefix, "node-a")
    b = RedisEventStore.from_url(redis_url, prefix, "node-b")
    await a.ensure_group()
    await b.ensure_group()
    events = [ev(i, f"user{i % 10}") for i in range(1000)]
    await a.append(events[:500])
    await b.append(events[500:])
    await a.append(events[100:200])  # a retry after a timeout: the same ids again
    # Node a reads a batch and dies before applying and acknowledging it.
    reply = await a.client.xreadgroup(GROUP, "node-a", {a.ingest: ">"}, count=200)
    assert len(reply[0][1]) == 200
    await a.close()
    await drain(b)
    # Node a restarts with its name and first takes back its pending entries.
    a = RedisEventStore.from_url(redis_url, prefix, "node-a")
    await a.ensure_group()
    await drain(a, b)
    assert a.applied + b.applied == 1000
    assert await a.count() == 1000
    pending = await a.client.xpending(a.ingest, GROUP)
    assert pending["pending"] == 0
    # Applying the same events again (a redelivery) changes nothing.
    assert await a.apply(events[:300]) == 0
    # Every node's recommender tails all applied events, each once.
    last, seen = "0-0", []
    while True:
        last, batch = await b.tail(last, block_ms=50)
        if not batch:
            break
        seen += batch
    assert sorted(e.id for e in seen) == sorted(e.id for e in events)
    assert len({e.id for e in await a.load(0.0)}) == 1000
    await a.close()
    await b.close()


async def test_deleting_a_user_leaves_nothing_of_theirs(redis_url):
    store = RedisEventStore.from_url(redis_url, "t2:", "node-a")
    await store.ensure_group()
    await store.append([ev(i, "alice" if i % 2 else "bob") for i in range(200)])
    await store.append([ev(1000, "alice")])  # still in the ingest stream, not applied yet
    await store.consume(block_ms=50)
    await store.save_segments({"alice": 1, "bob": 2})
    assert await store.count("alice") > 100
    await store.delete_user("alice")
    assert await store.count("alice") == 0  # canonical log, user set, segments, both streams
    raw = b""
    for key in await store.client.keys("t2:*"):
        assert b"alice" not in key
        if await store.client.type(key) == b"hash":
            raw += b"".join((await store.client.hgetall(key)).values())
    assert b"alice" not in raw
    assert await store.count("bob") == 100 + 1 + 100 + 100  # set, segment row, ingest and applied entries
    assert await store.purge(NOW + 50) == 25  # bob's events before NOW + 50
    await store.close()

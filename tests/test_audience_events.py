"""Audience events: the event model's checks, the bounded writer (offer never blocks, a full
queue drops and counts, a failing sink is retried), the SQLite store (idempotent by id,
retention, deleting a user's events and model rows)."""

from __future__ import annotations

import asyncio
import time

import pytest

from plugins.audience.events import Event, EventError, IdSource, Kind, parse, pseudonym
from plugins.audience.sqlite_store import SqliteEventStore
from plugins.audience.writer import EventWriter

NOW = 1_700_000_000.0


def ev(i: int, user: str = "u1", kind: Kind = Kind.CLICK, ts: float = NOW) -> Event:
    return Event(f"e{i}", kind, user, ts, "s1", "p1")


def test_parse_checks_every_field():
    new_id = IdSource()
    e = parse({"kind": "order", "product": "sku-1", "stream": "shop", "value": 2900}, "u", NOW, new_id)
    assert (e.kind, e.product, e.stream, e.value, e.ts, e.user) == (Kind.ORDER, "sku-1", "shop", 2900.0, NOW, "u")
    assert len(e.id) == 32
    assert parse({"kind": "watch_stop", "stream": "s", "duration": 60, "id": "x1"}, "u", NOW, new_id).id == "x1"
    for bad, message in (
        ({"kind": "nope"}, "kind"),
        ({"kind": "click", "stream": "s"}, "product"),
        ({"kind": "like"}, "stream"),
        ({"kind": "like", "stream": "a b"}, "stream"),
        ({"kind": "like", "stream": "s", "ts": NOW + 3600}, "ts"),
        ({"kind": "like", "stream": "s", "duration": -1}, "duration"),
        ({"kind": "like", "stream": "s", "value": float("nan")}, "value"),
        ({"kind": "like", "stream": "s", "value": None}, "value"),
        ({"kind": "like", "stream": 7}, "stream"),
        ({"kind": ["like"], "stream": "s"}, "kind"),
        ({"kind": "like", "stream": "s", "user": "someone-else"}, "unknown field 'user'"),
        ([1], "object"),
    ):
        with pytest.raises(EventError, match=message):
            parse(bad, "u", NOW, new_id)


def test_made_ids_are_unique_per_source_and_look_like_uuids():
    a, b = IdSource(), IdSource()
    ids = [a() for _ in range(1000)] + [b() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert IdSource(bytes(8))() == "0" * 32


def test_pseudonyms_are_keyed_and_stable():
    assert pseudonym(b"k1", "alice") == pseudonym(b"k1", "alice")
    assert pseudonym(b"k1", "alice") != pseudonym(b"k2", "alice")
    assert "alice" not in pseudonym(b"k1", "alice") and len(pseudonym(b"k1", "alice")) == 32


def test_event_json_round_trips():
    e = Event("id1", Kind.GIFT, "u", NOW, "s", "", 0.0, 500.0, "")
    assert Event.from_json(e.to_json()) == e


async def test_offer_never_blocks_and_a_full_queue_drops_and_counts():
    release = asyncio.Event()
    stored: list[Event] = []

    async def slow_sink(batch: list[Event]) -> None:
        await release.wait()  # the store hangs
        stored.extend(batch)

    writer = EventWriter(slow_sink, capacity=1000, batch=100)
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0)
    start = time.perf_counter()
    results = [writer.offer(ev(i)) for i in range(50_000)]
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"50,000 offers took {elapsed:.3f} s"
    # offer() is synchronous, so the drain task did not run in between: exactly the capacity.
    assert sum(results) == writer.accepted == 1000
    assert writer.dropped == 50_000 - sum(results)
    release.set()
    await asyncio.wait_for(writer.flush(), 5)
    assert len(stored) == sum(results) and writer.written == len(stored)
    task.cancel()


async def test_a_failing_sink_is_retried_then_counted():
    attempts = 0

    async def flaky(batch: list[Event]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise OSError("disk busy")

    writer = EventWriter(flaky, capacity=10, batch=10, retry_delay=0.001)
    task = asyncio.create_task(writer.run())
    writer.offer(ev(1))
    await asyncio.wait_for(writer.flush(), 5)
    assert (attempts, writer.written, writer.failed) == (3, 1, 0)

    async def broken(batch: list[Event]) -> None:
        raise OSError("gone")

    writer.sink = broken
    writer.offer(ev(2))
    await asyncio.wait_for(writer.flush(), 5)
    assert writer.failed == 1
    task.cancel()


async def test_sqlite_store_is_idempotent_purges_and_deletes_a_user(tmp_path):
    store = await SqliteEventStore.open(tmp_path / "audience.db")
    try:
        first = await store.append([ev(1), ev(2), ev(3, user="u2", ts=NOW - 100)])
        assert [e.id for e in first] == ["e1", "e2", "e3"]
        again = await store.append([ev(1), ev(4), ev(4, user="u2")])
        assert [e.id for e in again] == ["e4"], "an id already stored, or twice in the batch, is stored once"
        assert await store.count() == 4
        assert [e.id for e in await store.load(NOW - 50)] == ["e1", "e2", "e4"]
        await store.save_segments({"u1": 0, "u2": 1})
        assert await store.delete_user("u1") == 3
        assert await store.count("u1") == 0, "no event and no segment row of u1 is left"
        assert await store.count("u2") == 2
        assert await store.purge(NOW - 50) == 1
        assert await store.count() == 0
    finally:
        await store.close()
    # The events survive a reopen.
    store = await SqliteEventStore.open(tmp_path / "audience.db")
    await store.append([ev(9)])
    await store.close()
    store = await SqliteEventStore.open(tmp_path / "audience.db")
    assert await store.count() == 1
    await store.close()

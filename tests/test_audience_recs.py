"""Recommendation quality on the seeded synthetic log (time-ordered split): user-CF and
item-CF HR@10 at least twice most-popular's, for streams and products; a burst of events for
a new taste cluster changes a viewer's top 10 at the next refresh; cold start falls back to
segment then global popularity; forgetting a user removes their rows; "also bought"."""

from __future__ import annotations

import time

import pytest

from plugins.audience import evaluate, synthetic
from plugins.audience.cf import RecentIds, Recommender
from plugins.audience.events import Event, Kind


@pytest.fixture(scope="module")
def log() -> synthetic.SyntheticLog:
    return synthetic.generate(seed=7)


@pytest.mark.parametrize("kind", ["stream", "product"])
def test_cf_beats_most_popular_twice(log, kind):
    train, test = evaluate.split(log.events)
    result = evaluate.evaluate(train, test, kind)
    assert result["popular"]["users"] > 300
    for method in ("user", "item"):
        assert result[method]["hr"] >= 2 * result["popular"]["hr"], result
        assert result[method]["ndcg"] > result["popular"]["ndcg"], result


def burst(users: list[str], items: list[str], ts: float) -> list[Event]:
    out = []
    for u in users:
        for i in items:
            out.append(Event(f"b-{u}-{i}", Kind.ORDER, u, ts, "new-s", i))
            out.append(Event(f"w-{u}-{i}", Kind.GIFT, u, ts, "new-s"))
    return out


def test_a_burst_for_a_new_taste_cluster_changes_the_top_10_at_the_next_refresh(log):
    rec = Recommender()
    rec.ingest(log.events)
    now = log.events[-1].ts
    rec.refresh(now)
    viewer = "u3"
    before = [i for i, _ in rec.recommend(viewer, "product", 10)]
    assert len(before) == 10
    new = [f"new-{k}" for k in range(12)]
    crowd = [f"u{k}" for k in range(100, 160)]
    events = burst(crowd, new, now) + burst([viewer], new[:3], now)
    start = time.perf_counter()
    rec.ingest(events)
    assert rec.refresh(now)
    elapsed = time.perf_counter() - start
    after = [i for i, _ in rec.recommend(viewer, "product", 10)]
    assert set(after) & set(new[3:]), after
    assert elapsed < 5.0, f"refresh took {elapsed:.2f} s"


def test_cold_start_and_forgetting():
    rec = Recommender()
    t = 1_700_000_000.0
    events = [Event(f"a{u}", Kind.ORDER, f"u{u}", t, "s", "hit") for u in range(5)]
    events += [Event(f"b{u}", Kind.ORDER, f"u{u}", t, "s", "niche") for u in (0, 1)]
    rec.ingest(events)
    rec.refresh(t)
    assert [i for i, _ in rec.recommend("stranger", "product", 2)] == ["hit", "niche"]
    rec.segments = {"u0": 1, "u1": 1, "stranger": 1}
    rec.ingest([Event("c", Kind.ORDER, "u0", t, "s", "niche")])
    rec.refresh(t)
    assert [i for i, _ in rec.recommend("stranger", "product", 2)][0] == "niche", "segment popularity first"
    assert rec.also_bought("hit", 5)[0][0] == "niche"
    assert "u0" in rec.models["product"].top
    rec.forget("u0")
    assert "u0" not in rec.models["product"].top
    rec.refresh(t)
    assert all("u0" not in table.users for table in rec.tables.values())
    assert "u0" not in rec.models["product"].top and "u0" not in rec.segments


def test_a_redelivered_event_counts_once_and_weights_are_summed_per_pair():
    t = synthetic.START
    rec = Recommender()
    likes = [Event(f"l{i}", Kind.LIKE, "u1", t + i, "s1") for i in range(3)]
    rec.ingest(likes + likes[:1])  # one id twice in a batch
    rec.ingest([Event("g", Kind.GIFT, "u1", t + 5, "s2"), likes[1]])  # and again in the next
    assert rec.refresh(t + 10)
    assert rec.events_applied == 4
    table = rec.tables["stream"]
    u, s1, s2 = table.users["u1"], table.items["s1"], table.items["s2"]
    assert table.total == {(u, s1): 3.0, (u, s2): 3.0}
    rec.ingest(likes)  # delivered again after the refresh
    rec.refresh(t + 20)
    assert rec.events_applied == 4 and table.total[(u, s1)] == 3.0


def test_recent_ids_remember_at_least_half_their_capacity():
    recent = RecentIds(10)
    recent.update([str(i) for i in range(12)])
    assert [str(i) in recent for i in range(12)] == [False] * 5 + [True] * 7
    recent.update(["x"])
    assert "x" in recent and "11" in recent

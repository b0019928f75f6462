"""`mediacore-bench recs`: offline quality of the audience plugin's recommenders and the
latency from an event to a changed recommendation.

A seeded synthetic behaviour log with planted taste clusters (plugins/audience/synthetic.py)
is split by time (oldest 80 % to train); HR@10 and NDCG@10 of user-CF, item-CF, their blend
and most-popular, for streams and products. Then the live pipeline the plugin runs (bounded
writer → SQLite store → recommender refreshed every `update_interval` s in a worker thread)
is loaded with the training log, a burst of events for a new taste cluster is offered, and
the time until the viewer's top 10 changes is measured (goal: < 5 s). JSON and a PNG."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from plugins.audience import evaluate, synthetic
from plugins.audience.cf import Recommender
from plugins.audience.events import Event, Kind
from plugins.audience.sqlite_store import SqliteEventStore
from plugins.audience.writer import EventWriter

GOAL_RATIO = 2.0
GOAL_LATENCY = 5.0


async def _latency(log: synthetic.SyntheticLog, update_interval: float, trials: int) -> dict[str, Any]:
    now = log.events[-1].ts
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteEventStore.open(Path(tmp) / "audience.db")
        rec = Recommender()

        async def sink(batch: list[Event]) -> None:
            rec.ingest(await store.append(batch))

        writer = EventWriter(sink, 1_000_000, 500)
        drain = asyncio.create_task(writer.run())
        for e in log.events:
            writer.offer(e)
        await writer.flush()
        start = time.perf_counter()
        await asyncio.to_thread(rec.refresh, now)
        full_refresh = time.perf_counter() - start

        async def refresher() -> None:
            while True:
                await asyncio.sleep(update_interval)
                await asyncio.to_thread(rec.refresh, now)

        timer = asyncio.create_task(refresher())
        for trial in range(trials):
            viewer = f"u{trial * 17}"
            before = [i for i, _ in rec.recommend(viewer, "product", 10)]
            new = [f"new{trial}-{k}" for k in range(10)]
            burst = [
                Event(f"t{trial}-{u}-{p}", Kind.ORDER, user, now, "s-new", p)
                for u, user in enumerate([viewer] + [f"u{1000 + trial * 30 + k}" for k in range(30)])
                for p in (new[:2] if u == 0 else new)
            ]
            start = time.perf_counter()
            for e in burst:
                writer.offer(e)
            while [i for i, _ in rec.recommend(viewer, "product", 10)] == before:
                await asyncio.sleep(0.01)
                if time.perf_counter() - start > 30:
                    break
            results.append(time.perf_counter() - start)
        timer.cancel()
        drain.cancel()
        await store.close()
    return {
        "update_interval": update_interval,
        "full_refresh_seconds": full_refresh,
        "event_to_change_seconds": results,
        "max": max(results),
        "goal": GOAL_LATENCY,
        "met": max(results) < GOAL_LATENCY,
    }


def run(seed: int, users: int, update_interval: float, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    log = synthetic.generate(seed=seed, users=users)
    train, test = evaluate.split(log.events)
    report: dict[str, Any] = {
        "seed": seed,
        "users": users,
        "events": len(log.events),
        "train_events": len(train),
        "generate_seconds": time.perf_counter() - start,
        "quality": {},
    }
    for kind in ("stream", "product"):
        t = time.perf_counter()
        result = evaluate.evaluate(train, test, kind, methods=("user", "item", "blend"))
        pop = result["popular"]["hr"]
        report["quality"][kind] = {
            **result,
            "seconds": time.perf_counter() - t,
            "hr_ratio_vs_popular": {m: result[m]["hr"] / pop if pop else None for m in ("user", "item", "blend")},
            "goal_met": all(result[m]["hr"] >= GOAL_RATIO * pop for m in ("user", "item")),
        }
    report["latency"] = asyncio.run(_latency(log, update_interval, trials=5))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    _plot(report, out.with_suffix(".png"))
    for kind, q in report["quality"].items():
        row = "  ".join(
            f"{m} HR@10 {q[m]['hr']:.3f} NDCG@10 {q[m]['ndcg']:.3f}" for m in ("user", "item", "blend", "popular")
        )
        print(f"{kind:8s} {row}  ({int(q['popular']['users'])} test users)")
    lat = report["latency"]
    print(
        f"event → changed top 10: max {lat['max']:.2f} s over {len(lat['event_to_change_seconds'])} bursts "
        f"(refresh every {update_interval:g} s; a full refresh takes {lat['full_refresh_seconds']:.2f} s)"
    )
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ("user", "item", "blend", "popular")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, metric in zip(axes[:2], ("hr", "ndcg")):
        for k, kind in enumerate(("stream", "product")):
            values = [report["quality"][kind][m][metric] for m in methods]
            ax.bar([x + 0.4 * k for x in range(len(methods))], values, width=0.4, label=kind)
        ax.set_xticks([x + 0.2 for x in range(len(methods))], methods)
        ax.set_title(f"{metric.upper()}@10 (time-ordered split)")
        ax.legend()
    lat = report["latency"]["event_to_change_seconds"]
    axes[2].bar(range(len(lat)), lat)
    axes[2].axhline(GOAL_LATENCY, color="red", linestyle="--", label="goal 5 s")
    axes[2].set_title("event burst → changed top 10 (s)")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""One buyer process of the two-process flash-sale test: `python commerce_buyers.py PLAN OUT`.

PLAN (JSON) holds the Redis URL, the key prefix, this process's name and rounds of
attempts, each `{"sale_id", "attempts": [[user, quantity, key], ...]}`. Before each round
both processes meet at a barrier in Redis, then every attempt of the round runs at once as
an asyncio task. OUT gets, per round, `[user, quantity, status, order_id, error]` per attempt."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugins.commerce.model import Completed  # noqa: E402
from plugins.commerce.redis_store import RedisCommerceStore  # noqa: E402

BARRIER_TIMEOUT = 60.0
"""Seconds one process waits for the other at a round's barrier."""


async def main(plan_path: str, out_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    store = RedisCommerceStore.from_url(plan["url"], prefix=plan["prefix"])
    loop = asyncio.get_running_loop()
    rounds = []
    try:
        for n, round_ in enumerate(plan["rounds"]):
            barrier = f"{plan['prefix']}barrier:{n}"
            await store.client.incr(barrier)
            deadline = loop.time() + BARRIER_TIMEOUT
            while int(await store.client.get(barrier) or 0) < plan["processes"]:
                if loop.time() > deadline:
                    raise SystemExit(f"round {n}: the other buyer process never arrived")
                await asyncio.sleep(0.002)
            tasks = [
                asyncio.ensure_future(
                    store.purchase(user, sale_id=round_["sale_id"], quantity=q, idempotency_key=key, now=plan["now"])
                )
                for user, q, key in round_["attempts"]
            ]
            results = await asyncio.gather(*tasks)
            rows = []
            for (user, q, _key), result in zip(round_["attempts"], results):
                assert isinstance(result, Completed), result
                rows.append([user, q, result.status, result.order_id, result.error.value if result.error else None])
            rounds.append(rows)
    finally:
        await store.close()
    Path(out_path).write_text(json.dumps(rounds))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

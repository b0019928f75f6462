"""The chat room across two nodes (two engines with distinct ports) on one real redis-server:
one order and one seq on both, the rate limit across nodes, and redis-server stopped for 5 s
and restarted (without persistence: its data is gone) → both nodes resume, nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import aiohttp
import pytest
from chat_helpers import Client, chat_engine, chat_url, joined, token
from conftest import another_node, until

from benchmarks.servers import RedisServer
from mediacore.access.identity import Role
from mediacore.app.config import Config
from mediacore.app.engine import Engine


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


async def two_nodes(stack: AsyncExitStack, config: Config, redis: RedisServer, **chat: object) -> tuple[Engine, Engine]:
    a = await stack.enter_async_context(chat_engine(another_node(config, "1"), redis_url=redis.url, **chat))
    b = await stack.enter_async_context(chat_engine(another_node(config, "2"), redis_url=redis.url, **chat))
    return a, b


async def connect(
    http: aiohttp.ClientSession, engine: Engine, sub: str | None = None, role: Role = Role.VIEWER
) -> Client:
    return await joined(http, chat_url(engine, "shop", token(engine, sub, role) if sub else None))


async def test_a_message_on_node_a_reaches_node_b_in_order_with_one_seq(config, redis):
    async with AsyncExitStack() as stack:
        a, b = await two_nodes(stack, config, redis)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        on_a = [await connect(http, a, "alice", Role.HOST), await connect(http, a)]
        on_b = [await connect(http, b, "bob", Role.HOST), await connect(http, b)]
        for i in range(30):
            await on_a[0].send(type="chat", text=f"a{i}")
            await on_b[0].send(type="chat", text=f"b{i}")
        await on_a[0].send(type="gift", gift="rose", value=3)
        await on_b[1].send(type="like")  # a guest: refused, read-only
        for _ in range(4):
            await on_a[0].send(type="like", count=5)
        everyone = on_a + on_b
        for c in everyone:
            await until(lambda c=c: len(c.of("chat")) == 60 and c.of("gift"), 10, "every message on both nodes")
        # One seq per message on every client of both nodes. Each client gets chat in seq order;
        # a gift overtakes chat still queued for a client that lags (docs/chat.md, "Fan-out
        # and priorities"), so only the chat's order is the same everywhere.
        seqs = [sorted((e["seq"], e["id"]) for e in c.events if e["type"] in ("chat", "gift")) for c in everyone]
        assert all(s == seqs[0] for s in seqs), seqs
        assert [s for s, _ in seqs[0]] == list(range(1, 62))
        chats = [[(e["seq"], e["id"]) for e in c.of("chat")] for c in everyone]
        assert all(c == sorted(c) for c in chats), chats
        for c in everyone:
            await until(lambda c=c: c.of("likes") and c.of("likes")[-1]["total"] == 20, 5, "likes total on both")
            await until(lambda c=c: c.of("viewers") and c.of("viewers")[-1]["count"] == 4, 5, "viewers over nodes")
        late = await connect(http, b)
        await until(lambda: late.of("history"), 5, "history from the stream")
        assert [m["seq"] for m in late.of("history")[0]["messages"]] == list(range(12, 62))
        for c in [*everyone, late]:
            await c.close()


async def test_rate_limit_holds_across_nodes(config, redis):
    async with AsyncExitStack() as stack:
        a, b = await two_nodes(stack, config, redis)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        vic_a, vic_b = await connect(http, a, "vic"), await connect(http, b, "vic")
        for i in range(15):
            await vic_a.send(type="chat", text=f"from a {i}")
            await vic_b.send(type="chat", text=f"from b {i}")
        await until(lambda: len(vic_a.of("error")) + len(vic_b.of("error")) == 10, 10, "10 refusals")
        await until(lambda: len(vic_a.of("chat")) == 20 and len(vic_b.of("chat")) == 20, 5, "20 published")
        errors = vic_a.of("error") + vic_b.of("error")
        assert len(errors) == 10 and {e["code"] for e in errors} == {"rate_limited"}
        await vic_a.close()
        await vic_b.close()


async def test_redis_restart_both_nodes_resume_without_duplicates(config, redis):
    async with AsyncExitStack() as stack:
        a, b = await two_nodes(stack, config, redis)
        http = await stack.enter_async_context(aiohttp.ClientSession())
        host_a, host_b = await connect(http, a, "alice", Role.HOST), await connect(http, b, "bob", Role.HOST)
        watch_a, watch_b = await connect(http, a), await connect(http, b)
        everyone = [host_a, host_b, watch_a, watch_b]
        for i in range(5):
            await host_a.send(type="chat", text=f"before a{i}")
            await host_b.send(type="chat", text=f"before b{i}")
        for c in everyone:
            await until(lambda c=c: len(c.of("chat")) == 10, 5, "before the outage")
        redis.stop()
        await host_a.send(type="chat", text="during the outage")
        await until(lambda: host_a.of("error"), 5, "refused while Redis is down")
        assert host_a.of("error")[0]["code"] == "unavailable"
        await asyncio.sleep(5)
        redis.start()
        await asyncio.sleep(1.5)  # the readers find Redis again (BUS_RETRY_MAX)
        for i in range(5):
            await host_a.send(type="chat", text=f"after a{i}")
            await host_b.send(type="chat", text=f"after b{i}")
        for c in everyone:
            await until(lambda c=c: len(c.of("chat")) == 20, 10, "after the outage, on both nodes")
        await asyncio.sleep(0.3)
        for c in everyone:
            seqs = [e["seq"] for e in c.of("chat")]
            ids = [e["id"] for e in c.of("chat")]
            assert len(set(ids)) == 20 and seqs == sorted(set(seqs)), seqs  # nothing twice, in order
            assert seqs[:10] == list(range(1, 11)) and seqs[10] > 10
        for c in everyone:
            await c.close()

"""The chat plugin end to end on an in-process engine with real aiohttp WebSocket clients:
history on join, resume with since, limits, bans and deletes, the review hook against a real
HTTP server, priorities under a slow consumer, and bad input."""

from __future__ import annotations

import asyncio
import socket
import sys

import aiohttp
import msgpack
import pytest
from aiohttp import web
from chat_helpers import Client, chat_engine, chat_url, joined, token
from conftest import free_port, until

from mediacore.access.identity import Role


async def test_history_on_join_and_msgpack(config):
    async with chat_engine(config) as engine, aiohttp.ClientSession() as http:
        mod = await joined(http, chat_url(engine, "shop", token(engine, "host", Role.HOST)))
        for i in range(60):
            await mod.send(type="chat", text=f"message {i}")
        await until(lambda: len(mod.of("chat")) == 60, 5, "60 messages echoed")
        assert [e["seq"] for e in mod.of("chat")] == list(range(1, 61))
        late = await joined(http, chat_url(engine, "shop"))
        await until(lambda: late.of("history"), 5, "history")
        history = late.of("history")[0]["messages"]
        assert [m["text"] for m in history] == [f"message {i}" for i in range(10, 60)]
        assert history[0]["user"] == "host" and history[0]["seq"] == 11
        async with http.ws_connect(chat_url(engine, "shop"), protocols=("mediacore.msgpack",)) as binary:
            msg = await binary.receive()
            assert msg.type == aiohttp.WSMsgType.BINARY
            first = msgpack.unpackb(msg.data)
            assert first["type"] == "history" and first["messages"][-1]["text"] == "message 59"
            await mod.send(type="gift", gift="rose", value=5)
            while (event := msgpack.unpackb((await binary.receive()).data))["type"] != "gift":
                pass
            assert event["gift"] == "rose" and event["value"] == 5 and event["seq"] == 61
        await mod.close()
        await late.close()


async def test_resume_with_since_loses_nothing(config):
    async with chat_engine(config, history_keep=50) as engine, aiohttp.ClientSession() as http:
        sender = await joined(http, chat_url(engine, "shop", token(engine, "host", Role.HOST)))
        reader = await joined(http, chat_url(engine, "shop"))
        for i in range(10):
            await sender.send(type="chat", text=f"before {i}")
        await until(lambda: len(reader.of("chat")) == 10, 5, "reader got 10")
        last = reader.of("chat")[-1]["seq"]
        await reader.ws.close()  # the connection drops
        for i in range(15):
            await sender.send(type="chat", text=f"while away {i}")
        await until(lambda: len(sender.of("chat")) == 25, 5, "sent 25")
        back = Client(await http.ws_connect(chat_url(engine, "shop", since=last)))
        for i in range(5):
            await sender.send(type="chat", text=f"after {i}")
        await until(lambda: len(back.of("chat")) == 20, 5, "missed + new")
        await asyncio.sleep(0.2)
        assert [e["seq"] for e in back.of("chat")] == list(range(last + 1, last + 21))
        assert not back.of("history") and not back.of("reset")
        for i in range(150):  # push the old messages out of the kept history
            await sender.send(type="chat", text=f"flood {i}")
        await until(lambda: len(sender.of("chat")) + len(sender.of("error")) == 180, 5, "all answered")
        gone = Client(await http.ws_connect(chat_url(engine, "shop", since=last)))
        await until(lambda: gone.of("history"), 5, "history after reset")
        assert gone.events[0] == {"type": "reset"}
        for c in (sender, back, gone):
            await c.close()


async def test_rate_limit_slow_mode_and_length_cap_over_websocket(config):
    async with chat_engine(config) as engine, aiohttp.ClientSession() as http:
        viewer = await joined(http, chat_url(engine, "shop", token(engine, "vic")))
        watcher = await joined(http, chat_url(engine, "shop"))
        for i in range(25):
            await viewer.send(type="chat", text=f"spam {i}")
        await until(lambda: len(viewer.of("chat")) + len(viewer.of("error")) == 25, 5, "25 answers")
        await until(lambda: len(watcher.of("chat")) == 20, 5, "watcher got 20")
        assert [e["code"] for e in viewer.of("error")] == ["rate_limited"] * 5
        assert all(0 < e["retry_after"] <= 1.5 for e in viewer.of("error"))

        other = await joined(http, chat_url(engine, "shop", token(engine, "olga")))
        mod = await joined(http, chat_url(engine, "shop", token(engine, "mia", Role.MODERATOR)))
        await mod.send(type="slow_mode", seconds=30)
        await until(lambda: other.of("slow_mode"), 5, "slow mode announced")
        for i in range(3):
            await other.send(type="chat", text=f"slow {i}")
        await other.send(type="chat", text="z" * 501)
        await until(lambda: len(other.of("error")) == 3, 5, "3 refusals")
        assert [e["code"] for e in other.of("error")] == ["slow_mode", "slow_mode", "too_long"]
        await mod.send(type="slow_mode", seconds=0)
        await until(lambda: len(other.of("slow_mode")) == 2, 5, "slow mode off")
        await other.send(type="chat", text="y" * 500)
        await until(lambda: any(e["text"] == "y" * 500 for e in watcher.of("chat")), 5, "500 characters pass")
        guest = await joined(http, chat_url(engine, "shop"))
        await guest.send(type="chat", text="hi")
        await until(lambda: guest.of("error"), 5, "guest refused")
        assert guest.of("error")[0]["code"] == "unauthorized"
        for c in (viewer, watcher, other, mod, guest):
            await c.close()


async def test_bans_and_deletes_reach_everyone(config):
    async with chat_engine(config) as engine, aiohttp.ClientSession() as http:
        mod = await joined(http, chat_url(engine, "shop", token(engine, "mia", Role.MODERATOR)))
        troll = await joined(http, chat_url(engine, "shop", token(engine, "troll")))
        crowd = [await joined(http, chat_url(engine, "shop")) for _ in range(3)]
        await troll.send(type="chat", text="something rude")
        await until(lambda: all(c.of("chat") for c in crowd), 5, "everyone saw it")
        rude = crowd[0].of("chat")[0]["id"]
        await troll.send(type="delete", id=rude)
        await until(lambda: troll.of("error"), 5, "refused")
        assert troll.of("error")[0]["code"] == "forbidden"
        await mod.send(type="delete", id=rude)
        await mod.send(type="ban", user="troll", seconds=600)
        await mod.send(type="pin", id="abc")
        for c in [*crowd, troll, mod]:
            await until(lambda c=c: c.of("delete") and c.of("ban") and c.of("pin"), 5, "moderation reached all")
            assert c.of("delete")[0]["id"] == rude and c.of("ban")[0]["user"] == "troll"
        await troll.send(type="chat", text="let me back")
        await until(lambda: len(troll.of("error")) == 2, 5, "banned")
        assert troll.of("error")[1]["code"] == "banned"
        late = await joined(http, chat_url(engine, "shop"))
        await until(lambda: late.of("pin"), 5, "pin on join")
        assert late.of("history")[0]["messages"] == []  # the deleted message is not in history
        for c in [*crowd, troll, mod, late]:
            await c.close()


async def test_review_hook_allow_deny_replace_timeout(config):
    async def review(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = body["text"]
        assert body["room"] == "shop" and body["user"] == "vic"
        if text.startswith("slow"):
            await asyncio.sleep(2)
        if text.startswith("deny"):
            return web.json_response({"action": "deny"})
        if text.startswith("replace"):
            return web.json_response({"action": "replace", "text": "[edited]"})
        return web.json_response({"action": "allow"})

    app = web.Application()
    app.router.add_post("/review", review)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        hook = f"http://127.0.0.1:{port}/review"
        async with chat_engine(config, review_hook=hook, review_timeout=0.3, review_fallback="deny") as engine:
            async with aiohttp.ClientSession() as http:
                vic = await joined(http, chat_url(engine, "shop", token(engine, "vic")))
                for text in ("allow me", "deny me", "replace me", "slow me"):
                    await vic.send(type="chat", text=text)
                await until(lambda: len(vic.of("chat")) + len(vic.of("error")) == 4, 10, "4 answers")
                assert [e["text"] for e in vic.of("chat")] == ["allow me", "[edited]"]
                assert [e["code"] for e in vic.of("error")] == ["denied", "denied"]  # deny, then timeout
                await vic.close()
        config.server.http_port = free_port()
        async with chat_engine(config, review_hook=hook, review_timeout=0.3, review_fallback="allow") as engine:
            async with aiohttp.ClientSession() as http:
                vic = await joined(http, chat_url(engine, "shop", token(engine, "vic")))
                await vic.send(type="chat", text="slow but allowed")
                await until(lambda: vic.of("chat"), 5, "timeout falls back to allow")
                await vic.close()
    finally:
        await runner.cleanup()


async def test_priorities_under_a_slow_consumer(config):
    settings = {
        "send_queue": 32,
        "urgent_queue": 400,
        "stall_timeout": 2.0,
        "moderator_rate_messages": 100_000,
        "max_text": 3000,
    }
    async with chat_engine(config, **settings) as engine, aiohttp.ClientSession() as http:
        host = await joined(http, chat_url(engine, "shop", token(engine, "host", Role.HOST)))
        fans = [await joined(http, chat_url(engine, "shop", token(engine, f"fan{i}"))) for i in range(2)]
        slow = await http.ws_connect(chat_url(engine, "shop"), max_msg_size=0)
        stuck = await http.ws_connect(chat_url(engine, "shop"))
        for ws, size in ((slow, 32768), (stuck, 4096)):  # no receive-window autotuning to hide slowness
            sock = ws._response.connection.transport.get_extra_info("socket")  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        slow_events: list[dict] = []
        producing = True

        async def read_slowly() -> None:
            async for msg in slow:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    slow_events.append(msg.json())
                if producing:
                    await asyncio.sleep(0.02)  # 50 frames/s while the room makes 400

        slow_task = asyncio.create_task(read_slowly())
        padding = "p" * 2000  # big frames: the kernel buffers hold few of them
        chats = gifts = likes = 0
        for round_ in range(60):
            for i in range(20):  # a burst within the queue of a client that keeps up
                await host.send(type="chat", text=f"{round_}-{i} {padding}")
                chats += 1
            await host.send(type="gift", gift="rocket", value=round_ + 1)
            gifts += 1
            for fan in fans:
                await fan.send(type="like", count=2)
                likes += 2
            await asyncio.sleep(0.05)
        producing = False
        for fan in fans:
            await until(lambda fan=fan: len(fan.of("chat")) >= chats, 15, "a fast client got every chat message")
            assert len(fan.of("chat")) == chats
            await until(lambda fan=fan: fan.of("likes") and fan.of("likes")[-1]["total"] == likes, 5, "likes")
            assert len(fan.of("gift")) == gifts
        plugin = engine.plugin_host.plugins[0]

        def slow_state() -> str:
            """What the slow client had when a wait on it failed: closed (by whom), or just slow."""
            got = [e["type"] for e in slow_events]
            return (
                f"slow client closed={slow.closed} code={slow.close_code} reader done={slow_task.done()}; "
                f"it got {got.count('gift')} gifts, {got.count('chat')} chats, {len(got)} events; "
                f"clients closed as too slow: {plugin.closed_slow._value.get()}"
            )

        try:
            await until(lambda: len([e for e in slow_events if e["type"] == "gift"]) == gifts, 30, "every gift, slowly")
        except AssertionError as e:
            raise AssertionError(f"{e}: {slow_state()}") from None
        await until(lambda: any(e["type"] == "likes" and e["total"] == likes for e in slow_events), 10, "exact total")
        slow_chats = [e for e in slow_events if e["type"] == "chat"]
        assert len(slow_chats) < chats  # chat was shed for the slow client ...
        assert [e["seq"] for e in slow_chats] == sorted(e["seq"] for e in slow_chats)  # ... in order
        await until(lambda: plugin.closed_slow._value.get() >= 1, 10, "the stuck client closed")
        while (msg := await stuck.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            pass  # what was buffered before the close frame
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001 and "too slow" in (msg.extra or "")
        assert plugin.shed._value.get() + sum(c.queue.shed for c in plugin.connections) > 0
        assert not slow.closed  # the slow one kept up with what it must get
        slow_task.cancel()
        await slow.close()
        for c in (host, *fans):
            assert c.of("error") == []
            await c.close()


@pytest.mark.parametrize("cap", [5])
async def test_bad_input_closes_only_the_offender(config, cap):
    async with chat_engine(config, max_frame=1024, max_connections_per_address=cap) as engine:
        async with aiohttp.ClientSession() as http:
            good = await joined(http, chat_url(engine, "shop", token(engine, "good")))
            cases = [
                (lambda ws: ws.send_str("not json"), 1007),
                (lambda ws: ws.send_str("x" * 2000), 1009),
                (lambda ws: ws.send_bytes(b"\x81\xa4type"), 1003),
                (lambda ws: ws.send_str("[1, 2]"), 1007),
            ]
            for send, code in cases:
                async with http.ws_connect(chat_url(engine, "shop", token(engine, "bad"))) as ws:
                    await send(ws)
                    while (msg := await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        pass
                    assert ws.close_code == code, (code, msg)
            async with http.ws_connect(chat_url(engine, "shop", "garbage-token")) as ws:
                await ws.receive()
                assert ws.close_code == 1008
            async with http.ws_connect(chat_url(engine, "shop", token(engine, "odd"))) as ws:
                await ws.send_json({"type": "dance"})
                await ws.send_json({"type": "like", "count": 1000})
                seen = []
                while len(seen) < 2:
                    event = await ws.receive_json()
                    if event["type"] == "error":
                        seen.append(event["code"])
                assert seen == ["unknown_type", "bad_message"]  # open still: well-formed frames get errors
            flood = [await http.ws_connect(chat_url(engine, "shop")) for _ in range(cap * 4)]
            refused = 0
            for ws in flood:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    assert ws.close_code == 1013
                    refused += 1
            assert refused == cap * 4 - (cap - 1)  # `good` holds one of the address's places
            for ws in flood:
                await ws.close()
            await good.send(type="chat", text="still here")
            await until(lambda: good.of("chat"), 5, "the good client unaffected")
            await good.close()


async def test_the_chat_pane_script_is_served_and_loaded_by_the_watch_page(config):
    async with chat_engine(config) as engine, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{engine.http_port}"
        async with http.get(f"{base}/static/plugins/chat.js") as r:
            assert r.status == 200 and "mediacore:viewers" in await r.text()
        async with http.get(f"{base}/watch/shop") as r:
            assert '<script src="/static/plugins/chat.js" defer></script>' in await r.text()


FLOOD_CONNECTIONS = 10_000
"""WebSocket attempts one hostile address makes in the connection-flood test."""
FLOOD_CONCURRENCY = 600
"""Attempts in flight at once: beyond the HTTP listener's per-address cap (512), so both caps act."""


async def test_ten_thousand_connections_from_one_address_are_capped(config):
    """One address opens 10,000 chat connections and keeps every one it gets: the chat admits
    max_connections_per_address of them and closes the rest with 1013; attempts past the
    listener's per-address cap are refused with 429 before any WebSocket work. A viewer on
    another address keeps chatting throughout."""
    cap = 20
    async with chat_engine(config, max_connections_per_address=cap, guests_may_write=True) as engine:
        good_http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
        flood_http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            good = Client(await good_http.ws_connect(chat_url(engine, "shop", token(engine, "good"))))
            held: list[aiohttp.ClientWebSocketResponse] = []
            outcomes: dict[str, int] = {}
            gate = asyncio.Semaphore(FLOOD_CONCURRENCY)

            async def attempt() -> None:
                async with gate:
                    try:
                        ws = await flood_http.ws_connect(chat_url(engine, "shop"))
                    except aiohttp.WSServerHandshakeError as e:
                        outcomes[str(e.status)] = outcomes.get(str(e.status), 0) + 1
                        return
                    msg = await ws.receive()
                    if msg.type == aiohttp.WSMsgType.CLOSE:
                        outcomes[f"close {ws.close_code}"] = outcomes.get(f"close {ws.close_code}", 0) + 1
                        await ws.close()
                    else:
                        outcomes["open"] = outcomes.get("open", 0) + 1
                        held.append(ws)  # kept open, as an attacker would

            async def chatter() -> int:
                sent = 0
                while len(held) < cap or sum(outcomes.values()) < FLOOD_CONNECTIONS:
                    await good.send(type="chat", text=f"still here {sent}")
                    sent += 1
                    await asyncio.sleep(0.5)
                return sent

            talking = asyncio.create_task(chatter())
            await asyncio.gather(*(attempt() for _ in range(FLOOD_CONNECTIONS)))
            sent = await talking
            print("connection flood outcomes", outcomes, file=sys.stderr)
            assert sum(outcomes.values()) == FLOOD_CONNECTIONS
            assert outcomes.get("open") == cap, outcomes
            assert set(outcomes) <= {"open", "close 1013", "429"}, outcomes
            assert outcomes.get("close 1013", 0) > 0, outcomes
            await until(lambda: len(good.of("chat")) == sent, 10, "the other address's messages all echoed")
            assert good.of("error") == []
            for ws in held:
                await ws.close()
            await good.close()
        finally:
            await flood_http.close()
            await good_http.close()


async def test_an_idle_node_does_not_tick(config):
    """The chat tick (likes, viewer totals, stalled clients) runs only while the node has a
    chat connection or a room to let go of: an idle server costs no CPU for chat."""
    async with chat_engine(config) as engine, aiohttp.ClientSession() as http:
        chat = next(p for p in engine.plugin_host.plugins if p.name == "chat")
        ticks = 0
        tick = chat.tick

        async def counted() -> None:
            nonlocal ticks
            ticks += 1
            await tick()

        chat.tick = counted
        await asyncio.sleep(0.5)
        assert ticks == 0, "ticked with no connection and no room"
        viewer = await joined(http, chat_url(engine, "shop"))
        await until(lambda: ticks >= 3, 5, "ticks while a viewer is in the room")
        await viewer.close()
        await until(lambda: not chat.rooms and not chat.connections, 5, "the room let go")
        await asyncio.sleep(0.3)  # a tick already past its sleep may still run once
        settled = ticks
        await asyncio.sleep(0.5)
        assert ticks == settled, "still ticking after the last connection left"
        again = await joined(http, chat_url(engine, "shop"))
        await until(lambda: ticks > settled, 5, "ticks again once someone joins")
        await again.close()

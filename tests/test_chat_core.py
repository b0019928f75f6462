"""The chat plugin's sans-I/O cores with an injected clock: the token bucket and slow mode
give exact counts, the 500-character cap, duplicates, the send queue's classes and shedding,
frame decoding, history filtering and the review answers."""

from __future__ import annotations

import pytest

from mediacore.plugins.api import PluginError
from plugins.chat import protocol
from plugins.chat.bus import MemoryBus
from plugins.chat.protocol import BadMessage, Codec, ProtocolViolation, parse_command
from plugins.chat.rate import Buckets, take
from plugins.chat.review import decide
from plugins.chat.sendqueue import CHAT, STATE, URGENT, Outgoing, SendQueue
from plugins.chat.service import RoomService, Sender, visible_history
from plugins.chat.settings import ChatSettings
from plugins.chat.text_policy import WordFilter


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def service(**settings: object) -> tuple[RoomService, MemoryBus, FakeClock, list[tuple[str, int]]]:
    s = ChatSettings.parse(settings)
    bus = MemoryBus(s.history_keep)
    clock = FakeClock()
    likes: list[tuple[str, int]] = []
    return (
        RoomService(s, bus, WordFilter(max_length=s.max_text), None, clock, lambda r, n: likes.append((r, n))),
        bus,
        clock,
        likes,
    )


VIEWER = Sender("viewer", False, True)
MOD = Sender("mod", True, True)
GUEST = Sender("guest-1", False, False)


def test_token_bucket_exact_counts():
    bucket = None
    allowed = 0
    for _ in range(25):
        bucket, wait = take(bucket, 0.0, 20, 30.0)
        allowed += wait == 0
    assert allowed == 20
    assert wait == pytest.approx(1.5)  # one token per 1.5 s
    bucket, wait = take(bucket, 1.4, 20, 30.0)
    assert wait == pytest.approx(0.1)
    bucket, wait = take(bucket, 1.5, 20, 30.0)
    assert wait == 0
    buckets = Buckets()
    assert sum(buckets.take("u", 10.0, 3, 3.0) == 0 for _ in range(5)) == 3


async def test_rate_limit_exact_counts_through_the_service():
    svc, bus, clock, _ = service()
    answers = [await svc.handle("r", VIEWER, protocol.Chat(f"message {i}")) for i in range(25)]
    assert answers.count(None) == 20
    refused = [a for a in answers if a is not None]
    assert [a["code"] for a in refused] == ["rate_limited"] * 5
    assert refused[0]["retry_after"] == pytest.approx(1.5)
    clock.now += 3.0  # two tokens back
    answers = [await svc.handle("r", VIEWER, protocol.Chat(f"later {i}")) for i in range(3)]
    assert answers.count(None) == 2
    moderated = [await svc.handle("r", MOD, protocol.Chat(f"mod {i}")) for i in range(110)]
    assert moderated.count(None) == 100
    events, last = await bus.recent("r", 1000)
    assert last == 122 and [e["seq"] for e in events] == list(range(1, 123))


async def test_slow_mode_exact_counts():
    svc, bus, clock, _ = service()
    assert await svc.handle("r", VIEWER, protocol.SlowMode(10)) is not None  # viewers may not
    assert await svc.handle("r", MOD, protocol.SlowMode(10)) is None
    accepted = 0
    for i in range(60):  # one attempt per second for a minute
        answer = await svc.handle("r", VIEWER, protocol.Chat(f"tick {i}"))
        if answer is None:
            accepted += 1
        else:
            assert answer["code"] == "slow_mode" and 0 < answer["retry_after"] <= 10
        clock.now += 1.0
    assert accepted == 6
    assert sum([await svc.handle("r", MOD, protocol.Chat(f"m{i}")) is None for i in range(5)]) == 5  # exempt
    assert await svc.handle("r", MOD, protocol.SlowMode(0)) is None
    assert sum([await svc.handle("r", VIEWER, protocol.Chat(f"free {i}")) is None for i in range(5)]) == 5


async def test_length_cap_duplicates_bans_and_guests():
    svc, bus, clock, likes = service()
    assert await svc.handle("r", VIEWER, protocol.Chat("x" * 500)) is None
    assert (await svc.handle("r", VIEWER, protocol.Chat("y" * 501)))["code"] == "too_long"
    assert (await svc.handle("r", VIEWER, protocol.Chat("   \n\t ")))["code"] == "empty"
    assert await svc.handle("r", VIEWER, protocol.Chat("Hello   there")) is None
    assert (await svc.handle("r", VIEWER, protocol.Chat("hello there")))["code"] == "duplicate"
    clock.now += 31
    assert await svc.handle("r", VIEWER, protocol.Chat("hello there")) is None
    assert (await svc.handle("r", GUEST, protocol.Chat("hi")))["code"] == "unauthorized"
    assert (await svc.handle("r", VIEWER, protocol.Ban("x", None)))["code"] == "forbidden"
    assert await svc.handle("r", MOD, protocol.Ban("viewer", 60)) is None
    assert (await svc.handle("r", VIEWER, protocol.Chat("am I banned")))["code"] == "banned"
    assert (await svc.handle("r", VIEWER, protocol.Gift("rose", 5)))["code"] == "banned"
    clock.now += 61
    assert await svc.handle("r", VIEWER, protocol.Chat("back again")) is None
    assert await svc.handle("r", VIEWER, protocol.Like(3)) is None and likes == [("r", 3)]
    events, _ = await bus.recent("r", 100)
    texts = [e["text"] for e in events if e["type"] == "chat"]
    assert texts == ["x" * 500, "Hello there", "hello there", "back again"]


def test_send_queue_classes_shedding_and_coalescing():
    q = SendQueue(chat_limit=3, urgent_limit=2, now=0.0)
    for i in range(5):
        assert q.push(Outgoing({"type": "chat", "id": f"c{i}", "seq": i + 1}, CHAT), 0.0)
    assert q.shed == 2
    assert q.push(Outgoing({"type": "likes", "total": 1}, STATE), 0.0)
    assert q.push(Outgoing({"type": "likes", "total": 7}, STATE), 0.0)
    assert q.push(Outgoing({"type": "gift", "id": "g1", "seq": 9}, URGENT), 0.0)
    assert q.cancel_chat("c3")
    order = []
    while (item := q.pop(1.0)) is not None:
        order.append(item.event.get("id") or item.event["total"])
    assert order == ["g1", "c2", "c4", 7]  # gift first, chat oldest first, one exact total
    assert q.push(Outgoing({"type": "gift"}, URGENT), 2.0) and q.push(Outgoing({"type": "gift"}, URGENT), 2.0)
    assert not q.push(Outgoing({"type": "gift"}, URGENT), 2.0)  # overflow: close the client
    assert not q.stalled(3.0, 5.0) and q.stalled(7.0, 5.0)


def test_frames_and_commands():
    text, binary = Codec(False), Codec(True)
    assert parse_command(text.decode('{"type":"chat","text":"hi"}')) == protocol.Chat("hi")
    assert parse_command(binary.decode(protocol.encode_msgpack({"type": "like"}))) == protocol.Like(1)
    for bad, code in (("not json", 1007), ("[1,2]", 1007), (b"\x00", 1003)):
        with pytest.raises(ProtocolViolation) as e:
            text.decode(bad)
        assert e.value.code == code
    with pytest.raises(ProtocolViolation) as e:
        binary.decode('{"type":"chat"}')
    assert e.value.code == 1003
    for message, code in (
        ({"type": "dance"}, "unknown_type"),
        ({"type": "like", "count": 51}, "bad_message"),
        ({"type": "gift", "gift": "rose", "value": float("nan")}, "bad_message"),
        ({"type": "gift", "gift": "", "value": 1}, "bad_message"),
        ({"type": "chat", "text": 5}, "bad_message"),
        ({"type": "ban", "user": "x", "seconds": True}, "bad_message"),
    ):
        with pytest.raises(BadMessage) as b:
            parse_command(message)
        assert b.value.code == code


def test_history_hides_deleted_and_moderation_events():
    events = [{"type": "chat", "id": f"m{i}", "seq": i} for i in range(60)]
    events += [{"type": "delete", "id": "m59", "seq": 60}, {"type": "ban", "user": "u", "seq": 61}]
    shown = visible_history(events, 50)
    assert len(shown) == 50 and shown[0]["id"] == "m9" and shown[-1]["id"] == "m58"


def test_review_answers_and_settings():
    assert decide({"action": "allow"}, "t").text == "t"
    assert not decide({"action": "deny"}, "t").allowed
    assert decide({"action": "replace", "text": "***"}, "t").text == "***"
    assert decide({"action": "replace"}, "t") is None and decide("allow", "t") is None
    with pytest.raises(PluginError, match="review_fallback"):
        ChatSettings.parse({"review_fallback": "maybe"})
    with pytest.raises(PluginError, match="unknown setting"):
        ChatSettings.parse({"nope": 1})
    with pytest.raises(PluginError, match="must be int"):
        ChatSettings.parse({"max_text": "500"})
    assert WordFilter().check("  a \n b ").text == "a b"


async def test_memory_bus_since():
    bus = MemoryBus(keep=5)
    for i in range(8):
        await bus.publish("r", {"type": "chat", "id": str(i)})
    assert [e["seq"] for e in await bus.since("r", 5, 100)] == [6, 7, 8]
    assert await bus.since("r", 8, 100) == []
    assert await bus.since("r", 2, 100) is None  # trimmed
    assert await bus.since("r", 9, 100) is None  # from the future
    assert await bus.since("r", 5, 2) is None  # too many


def test_the_example_configuration_lists_every_chat_setting_with_its_default():
    import dataclasses
    import tomllib

    from conftest import ROOT

    listed = tomllib.loads((ROOT / "mediacore.example.toml").read_text())["chat"]
    assert set(listed) == {f.name for f in dataclasses.fields(ChatSettings)}
    assert ChatSettings.parse(listed) == ChatSettings()

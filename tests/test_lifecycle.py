"""The life of a stream after its publisher leaves, on an injected clock: the grace period,
EXT-X-ENDLIST, the retention of the ended playlist (W8) and forgetting, with no sleeps."""

from __future__ import annotations

import base64

from conftest import until

from mediacore.app.config import Config
from mediacore.app.engine import Engine
from mediacore.app.lifecycle import EndStream, ForgetStream, StreamLifecycle
from mediacore.model.h264 import build_avcc
from mediacore.model.media import Frame, Kind, Track

SPS, PPS = (base64.b64decode(s) for s in ("Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=", "aOvssiw="))  # 720p High
VIDEO = Track(Kind.VIDEO, "h264", 90000, build_avcc(SPS, PPS), "avc1.64001f", 1280, 720)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_grace_then_end_then_forget() -> None:
    life = StreamLifecycle(end_grace=10.0, ended_retention=60.0)
    life.unpublished("shop", epoch=0, now=100.0)
    assert life.next_deadline() == 110.0
    assert life.due(109.9) == []
    assert life.due(110.0) == [EndStream("shop", 0)]
    assert life.due(110.0) == []  # handed out once
    life.ended("shop", now=110.0)
    assert life.due(169.9) == [] and life.due(170.0) == [ForgetStream("shop")]
    assert life.next_deadline() is None


def test_a_fresh_publish_cancels_what_was_due() -> None:
    life = StreamLifecycle(end_grace=10.0, ended_retention=60.0)
    life.unpublished("a", 0, now=0.0)
    life.unpublished("b", 3, now=5.0)
    life.published("a")
    assert life.due(100.0) == [EndStream("b", 3)]


async def publish_a_segment(engine: Engine, name: str) -> None:
    publisher = engine.hub.publish(name)
    publisher.update_track(VIDEO)
    for i in range(130):  # two 2 s GOPs at 30 fps and the keyframe that closes the second
        publisher.send(Frame(VIDEO, i * 3000, i * 3000, i % 60 == 0, b"\x00\x00\x00\x02\x65\x88", 1000.0 + i / 30))
    store = engine.stores[name]
    await until(lambda: store.ready, 5, "the first segment")
    publisher.close()


async def test_engine_ends_and_forgets_a_stream_on_its_clock(config: Config) -> None:
    clock = FakeClock()
    engine = Engine(config, clock=clock)
    try:
        await publish_a_segment(engine, "shop")
        stream, store = engine.hub.get("shop"), engine.stores["shop"]
        assert stream is not None and not stream.publishing and not stream.ended
        clock.now += config.hls.end_grace - 0.1
        engine.run_lifecycle()
        assert not stream.ended  # still within the grace period
        clock.now += 0.2
        engine.run_lifecycle()
        assert stream.ended
        await until(lambda: store.ended, 5, "the packager writing ENDLIST")
        assert store.playlist_text().endswith("#EXT-X-ENDLIST\n")
        clock.now += config.hls.ended_retention - 0.1
        engine.run_lifecycle()
        assert engine.hub.get("shop") is stream and "shop" in engine.stores  # W8: still served
        clock.now += 0.2
        engine.run_lifecycle()
        assert engine.hub.get("shop") is None and "shop" not in engine.stores and "shop" not in engine.ll_renditions
    finally:
        await engine.stop()


async def test_a_publisher_back_within_the_grace_period_is_never_ended(config: Config) -> None:
    clock = FakeClock()
    engine = Engine(config, clock=clock)
    try:
        await publish_a_segment(engine, "shop")
        clock.now += config.hls.end_grace / 2
        engine.hub.publish("shop")  # back: the same stream, a new epoch
        clock.now += config.hls.end_grace
        engine.run_lifecycle()
        stream = engine.hub.get("shop")
        assert stream is not None and stream.publishing and not stream.ended and stream.epoch == 1
    finally:
        await engine.stop()

"""Where a TS segment is muxed: on the event loop up to MUX_ON_LOOP_BYTES of media, on the
engine's mux thread above (the muxer holds the GIL, so only a large segment is worth the
hand-off: on the loop it would hold it for its whole mux)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from conftest import until

from mediacore.app.config import Config
from mediacore.app.engine import Engine
from mediacore.model.h264 import build_avcc
from mediacore.model.media import Frame, Kind, Track
from mediacore.packager.hls import MUX_ON_LOOP_BYTES

SPS, PPS = (base64.b64decode(s) for s in ("Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=", "aOvssiw="))  # 720p High
VIDEO = Track(Kind.VIDEO, "h264", 90000, build_avcc(SPS, PPS), "avc1.64001f", 1280, 720)
GOP = 60  # 2 s at 30 fps


class CountingMuxThread(ThreadPoolExecutor):
    """The engine's mux thread, counting the segments handed to it."""

    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="mux")
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def nal(size: int) -> bytes:
    """One length-prefixed IDR-type NAL unit of `size` bytes."""
    return size.to_bytes(4, "big") + b"\x65" + bytes(size - 1)


async def test_a_small_segment_is_muxed_on_the_loop_and_a_large_one_on_the_mux_thread(config: Config) -> None:
    engine = Engine(config)
    mux_thread = engine.mux_thread = CountingMuxThread()
    large_frame = MUX_ON_LOOP_BYTES // GOP + 1024  # a GOP of these is over the bound
    sizes = [6] * GOP + [large_frame] * GOP + [6] * GOP + [6]  # small, large, small GOP, closing keyframe
    try:
        publisher = engine.hub.publish("mixed")
        publisher.update_track(VIDEO)
        for i, size in enumerate(sizes):
            publisher.send(Frame(VIDEO, i * 3000, i * 3000, i % GOP == 0, nal(size), 1000.0 + i / 30))
        store = engine.stores["mixed"]
        await until(lambda: store.ready and len(store.playlist().segments) == 3, 10, "three segments")
        assert mux_thread.submitted == 1  # the large one only
        muxed = [store.get_segment(s.uri, engine.clock()) for s in store.playlist().segments if s.uri]
        assert [m is not None and len(m.data) > MUX_ON_LOOP_BYTES for m in muxed] == [False, True, False]
        publisher.close()
    finally:
        await engine.stop()

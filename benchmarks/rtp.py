"""`mediacore-bench rtp`: packets/s through RTP parsing, the jitter buffer and the H.264
depacketizer.

The trace: 1000-byte H.264 FU-A packets (30 per frame, an IDR every 60 frames) whose
sequence numbers and timestamps wrap, with 5 % adjacent reordering, 1 % loss and 1 %
duplicates (seeded). Our parser, jitter buffer and depacketizer (compiled and pure twins)
against aiortc's RtpPacket.parse, JitterBuffer and H.264 depayloader on the same trace,
when aiortc is installed. Each figure is the best of three passes.

Rows: "header parse" is parse_rtp (it copies nothing; the payload is cut out on demand);
"parse + payload" also cuts the payload out, the work aiortc's parse does; "parse + jitter
buffer" pushes and pops every packet; "full path" adds depacketizing to access units
(aiortc: depayload before JitterBuffer.add, as its RTCRtpReceiver does).
The queue suite compares the hub's PriorityPacketQueue with heapq and collections.deque.
"""

from __future__ import annotations

import base64
import collections
import heapq
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from ingest.rtp import rtp_packet as pure_rtp
from ingest.rtp.compiled import (
    DEPACKETIZER_COMPILED,
    JITTER_COMPILED,
    RTP_COMPILED,
    H264Depacketizer,
    JitterBuffer,
    parse_rtp,
)
from ingest.rtp.h264_depacketize import H264Depacketizer as PureH264Depacketizer
from ingest.rtp.jitter_buffer import JitterBuffer as PureJitterBuffer
from mediacore.hub.priority_queue import AUDIO, KEY, NONREF, REF
from mediacore.hub.priority_queue import PriorityPacketQueue as PurePriorityPacketQueue
from mediacore.hub.queues import QUEUE_COMPILED, PriorityPacketQueue

PACKETS_PER_FRAME = 30
FRAMES_PER_GOP = 60
SPS, PPS = (base64.b64decode(s) for s in ("Z2QAH6zZQFAFuwEQAAADABAAAAMDIPGDGWA=", "aOvssiw="))  # 720p High


def fu_a(index: int) -> bytes:
    """Packet `index` of the stream as an FU-A fragment of 998 payload bytes."""
    frame, part = divmod(index, PACKETS_PER_FRAME)
    nal_type = 5 if frame % FRAMES_PER_GOP == 0 else 1
    header = (0x80 if part == 0 else 0) | (0x40 if part == PACKETS_PER_FRAME - 1 else 0) | nal_type
    return bytes((0x7C, header)) + bytes(998)


def make_trace(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    frames = count // PACKETS_PER_FRAME
    seq0, ts0 = 65535 - count // 4, 2**32 - 3000 * (frames // 4)  # both wrap a quarter of the way in
    order: list[int] = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.01:
            continue  # lost
        order.append(i)
        if roll < 0.02:
            order.append(i)  # duplicated
    for i in range(len(order) - 1):
        if rng.random() < 0.05:
            order[i], order[i + 1] = order[i + 1], order[i]  # adjacent reordering
    return [
        pure_rtp.RtpPacket(
            96,
            (seq0 + i) & 0xFFFF,
            (ts0 + 3000 * (i // PACKETS_PER_FRAME)) & 0xFFFFFFFF,
            0x1234,
            fu_a(i),
            i % PACKETS_PER_FRAME == PACKETS_PER_FRAME - 1,
        ).serialize()
        for i in order
    ]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def best_rate(count: int, run: Callable[[], object], passes: int = 3) -> float:
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return rate(count, best)


def bench_ours(trace: list[bytes], parse: Callable, jitter_cls: type, depacketizer_cls: type) -> dict[str, float]:
    def header() -> None:
        for data in trace:
            parse(data)

    def with_payload() -> None:
        for data in trace:
            parse(data).payload

    def jitter() -> None:
        jb = jitter_cls(90000, capacity=512)
        now = 0.0
        for data in trace:
            packet = parse(data)
            jb.push(packet.sequence, packet.timestamp, packet.ssrc, packet, now)
            jb.pop(now)
            now += 0.001

    def full() -> None:
        jb = jitter_cls(90000, capacity=512)
        depacketizer = depacketizer_cls([SPS, PPS])
        now = 0.0
        last = -1
        for data in trace:
            packet = parse(data)
            jb.push(packet.sequence, packet.timestamp, packet.ssrc, packet, now)
            for ready in jb.pop(now):
                if last >= 0 and ready.sequence != (last + 1) & 0xFFFF:
                    depacketizer.lost()
                last = ready.sequence
                depacketizer.push(ready)
            now += 0.001

    n = len(trace)
    return {
        "header": best_rate(n, header),
        "payload": best_rate(n, with_payload),
        "jitter": best_rate(n, jitter),
        "full": best_rate(n, full),
    }


def bench_aiortc(trace: list[bytes]) -> dict[str, float] | None:
    try:
        from aiortc.codecs.h264 import H264PayloadDescriptor
        from aiortc.jitterbuffer import JitterBuffer as AiortcJitterBuffer
        from aiortc.rtp import HeaderExtensionsMap
        from aiortc.rtp import RtpPacket as AiortcRtpPacket
    except ImportError:
        return None
    extensions = HeaderExtensionsMap()

    def header() -> None:
        for data in trace:
            AiortcRtpPacket.parse(data, extensions)

    def jitter() -> None:
        jb = AiortcJitterBuffer(capacity=512, is_video=True)
        for data in trace:
            packet = AiortcRtpPacket.parse(data, extensions)
            packet._data = packet.payload  # what its receiver sets (the depayloaded data) before add()
            jb.add(packet)

    def full() -> None:
        jb = AiortcJitterBuffer(capacity=512, is_video=True)
        for data in trace:
            packet = AiortcRtpPacket.parse(data, extensions)
            _descriptor, packet._data = H264PayloadDescriptor.parse(packet.payload)
            jb.add(packet)

    n = len(trace)
    parse_rate = best_rate(n, header)
    return {"header": parse_rate, "payload": parse_rate, "jitter": best_rate(n, jitter), "full": best_rate(n, full)}


QUEUE_PATTERN = (KEY, AUDIO, REF, NONREF, AUDIO, NONREF, REF, AUDIO, NONREF, REF)


def bench_queues(operations: int) -> dict[str, float]:
    """push/pop operations/s: push every step, pop every other step (so the queue fills and,
    for the bounded queues, drops), the same pattern for each queue."""
    results = {}
    pattern = QUEUE_PATTERN
    n = len(pattern)
    for name, pq_factory in (
        (
            "PriorityPacketQueue (compiled)" if QUEUE_COMPILED else "PriorityPacketQueue",
            lambda: PriorityPacketQueue(4096, 1 << 30),
        ),
        ("PriorityPacketQueue (pure)", lambda: PurePriorityPacketQueue(4096, 1 << 30)),
    ):
        pq = pq_factory()
        start = time.perf_counter()
        for i in range(operations):
            pq.push(i, 1000, pattern[i % n])
            if i & 1:
                pq.pop()
        results[name] = rate(operations, time.perf_counter() - start)
    heap: list[tuple[int, int, int]] = []
    start = time.perf_counter()
    for i in range(operations):
        heapq.heappush(heap, (pattern[i % n], i, i))
        if i & 1:
            heapq.heappop(heap)
    results["heapq (unbounded)"] = rate(operations, time.perf_counter() - start)
    dq: collections.deque[int] = collections.deque(maxlen=4096)
    start = time.perf_counter()
    for i in range(operations):
        dq.append(i)
        if i & 1:
            dq.popleft()
    results["collections.deque"] = rate(operations, time.perf_counter() - start)
    return results


ROW_LABELS = {
    "header": "header parse",
    "payload": "parse + payload",
    "jitter": "parse + jitter buffer",
    "full": "full path (+ H.264 depacketizer)",
}


def run(packets: int, out: Path | None) -> dict:
    trace = make_trace(packets)
    report: dict = {"suite": "rtp", "packets": len(trace)}
    build = "compiled" if RTP_COMPILED and JITTER_COMPILED and DEPACKETIZER_COMPILED else "pure"
    results = {
        f"mediacore ({build})": bench_ours(trace, parse_rtp, JitterBuffer, H264Depacketizer),
        "mediacore (pure)": bench_ours(trace, pure_rtp.parse_rtp, PureJitterBuffer, PureH264Depacketizer),
    }
    theirs = bench_aiortc(trace)
    if theirs is not None:
        results["aiortc"] = theirs
    for key, label in ROW_LABELS.items():
        for who, figures in results.items():
            if who == "aiortc" and key == "payload":
                continue  # its parse already copies the payload
            print(f"{label + ' (' + who + ')':<52} {figures[key]:>12,.0f} packets/s")
    report["results"] = {who: {k: round(v) for k, v in figures.items()} for who, figures in results.items()}
    if theirs is None:
        print("aiortc is not installed: no peer comparison (pip install aiortc)")
    else:
        ours = results[f"mediacore ({build})"]
        ratios = {
            "header_parse_vs_aiortc": ours["header"] / theirs["header"],
            "parse_with_payload_vs_aiortc": ours["payload"] / theirs["header"],
            "jitter_path_vs_aiortc": ours["jitter"] / theirs["jitter"],
            "full_path_vs_aiortc": ours["full"] / theirs["full"],
        }
        report.update({k: round(v, 2) for k, v in ratios.items()})
        print(
            "vs aiortc: "
            + "; ".join(f"{k.removesuffix('_vs_aiortc').replace('_', ' ')} {v:.1f}x" for k, v in ratios.items())
        )
    queues = bench_queues(1_000_000)
    for label, value in queues.items():
        print(f"queue {label:<46} {value:>12,.0f} operations/s")
    report["queues"] = {k: round(v) for k, v in queues.items()}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"results written to {out}")
    return report

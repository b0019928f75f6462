"""`mediacore-bench rtp`: packets/s through RTP parsing and the jitter buffer.

The trace: 1000-byte packets whose sequence numbers and timestamps wrap, with 5 % adjacent
reordering, 1 % loss and 1 % duplicates (seeded). Our parser and jitter buffer (compiled
and pure twins) against aiortc's RtpPacket.parse and JitterBuffer on the same trace, when
aiortc is installed. The queue suite compares the hub's PriorityPacketQueue and PacketFifo with heapq and
collections.deque.
"""

from __future__ import annotations

import collections
import heapq
import json
import random
import time
from pathlib import Path

from ingest.rtp.packet import RtpPacket
from mediacore.compiled import (FIFO_COMPILED, JITTER_COMPILED, QUEUE_COMPILED, JitterBuffer, PacketFifo,
                                PriorityPacketQueue)
from mediacore.jitter_buffer import JitterBuffer as PureJitterBuffer
from mediacore.packet_fifo import PacketFifo as PurePacketFifo
from mediacore.priority_queue import AUDIO, KEY, NONREF, REF
from mediacore.priority_queue import PriorityPacketQueue as PurePriorityPacketQueue


def make_trace(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    seq0, ts0 = 65535 - count // 4, 2**32 - 3000 * (count // 4)  # both wrap a quarter of the way in
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
    payload = bytes(1000)
    return [RtpPacket(96, (seq0 + i) & 0xFFFF, (ts0 + 3000 * i) & 0xFFFFFFFF, 0x1234, payload, i % 30 == 29).serialize()
            for i in order]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_ours(trace: list[bytes], jitter_cls: type) -> tuple[float, float]:
    start = time.perf_counter()
    for data in trace:
        RtpPacket.parse(data)
    parse_rate = rate(len(trace), time.perf_counter() - start)
    jb = jitter_cls(90000, capacity=512)
    start = time.perf_counter()
    now = 0.0
    for data in trace:
        packet = RtpPacket.parse(data)
        jb.push(packet.sequence, packet.timestamp, packet.ssrc, packet, now)
        jb.pop(now)
        now += 0.001
    return parse_rate, rate(len(trace), time.perf_counter() - start)


def bench_aiortc(trace: list[bytes]) -> tuple[float, float] | None:
    try:
        from aiortc.jitterbuffer import JitterBuffer as AiortcJitterBuffer
        from aiortc.rtp import HeaderExtensionsMap
        from aiortc.rtp import RtpPacket as AiortcRtpPacket
    except ImportError:
        return None
    extensions = HeaderExtensionsMap()
    start = time.perf_counter()
    for data in trace:
        AiortcRtpPacket.parse(data, extensions)
    parse_rate = rate(len(trace), time.perf_counter() - start)
    jb = AiortcJitterBuffer(capacity=512, is_video=True)
    start = time.perf_counter()
    for data in trace:
        packet = AiortcRtpPacket.parse(data, extensions)
        packet._data = packet.payload  # what aiortc's receiver sets (the depayloaded data) before add()
        jb.add(packet)
    return parse_rate, rate(len(trace), time.perf_counter() - start)


QUEUE_PATTERN = (KEY, AUDIO, REF, NONREF, AUDIO, NONREF, REF, AUDIO, NONREF, REF)


def bench_queues(operations: int) -> dict[str, float]:
    """push/pop operations/s: push every step, pop every other step (so the queue fills and,
    for the bounded queues, drops), the same pattern for each queue."""
    results = {}
    pattern = QUEUE_PATTERN
    n = len(pattern)
    for name, pq_factory in (
        ("PriorityPacketQueue (compiled)" if QUEUE_COMPILED else "PriorityPacketQueue", lambda: PriorityPacketQueue(4096, 1 << 30)),
        ("PriorityPacketQueue (pure)", lambda: PurePriorityPacketQueue(4096, 1 << 30)),
    ):
        pq = pq_factory()
        start = time.perf_counter()
        for i in range(operations):
            pq.push(i, 1000, pattern[i % n])
            if i & 1:
                pq.pop()
        results[name] = rate(operations, time.perf_counter() - start)
    for name, factory in (("PacketFifo (compiled)" if FIFO_COMPILED else "PacketFifo", lambda: PacketFifo(4096, 1 << 30)),
                          ("PacketFifo (pure)", lambda: PurePacketFifo(4096, 1 << 30))):
        q = factory()
        start = time.perf_counter()
        for i in range(operations):
            q.push(i, 1000)
            if i & 1:
                q.pop()
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


def run(packets: int, out: Path | None) -> dict:
    trace = make_trace(packets)
    report: dict = {"suite": "rtp", "packets": len(trace)}
    ours = bench_ours(trace, JitterBuffer)
    pure = bench_ours(trace, PureJitterBuffer)
    theirs = bench_aiortc(trace)
    rows = [("parse (mediacore)", ours[0]), ("parse + jitter buffer (mediacore, "
            + ("compiled)" if JITTER_COMPILED else "pure)"), ours[1]), ("parse + jitter buffer (mediacore, pure)", pure[1])]
    if theirs is not None:
        rows += [("parse (aiortc)", theirs[0]), ("parse + jitter buffer (aiortc)", theirs[1])]
        report["parse_vs_aiortc"] = round(ours[0] / theirs[0], 2)
        report["jitter_path_vs_aiortc"] = round(ours[1] / theirs[1], 2)
    for label, value in rows:
        print(f"{label:<45} {value:>12,.0f} packets/s")
        report[label] = round(value)
    if theirs is None:
        print("aiortc is not installed: no peer comparison (pip install aiortc)")
    else:
        print(f"parse vs aiortc: {report['parse_vs_aiortc']}x; parse + jitter buffer vs aiortc: {report['jitter_path_vs_aiortc']}x")
    queues = bench_queues(1_000_000)
    for label, value in queues.items():
        print(f"queue {label:<39} {value:>12,.0f} operations/s")
    report["queues"] = {k: round(v) for k, v in queues.items()}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"results written to {out}")
    return report

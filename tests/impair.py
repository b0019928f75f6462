"""A UDP impairment relay for tests: what a bad network does to RTP, seeded and logged.

RtpImpairmentRelay forwards one RTP flow with loss, duplication, adjacent reordering and
jitter (a FIFO delay line, as netem does without reordering: jitter only delays) and logs
the sequence numbers it actually sent, so a test can compute what a receiver must count.
RtcpRelay forwards the sender's RTCP unchanged and records what the receiver sends back.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Expected:
    """What a receiver should count for the flow the relay delivered."""

    lost: int
    duplicates: int
    reordered: int
    delivered: int
    lost_sequences: set[int] = field(default_factory=set)


class RtpImpairmentRelay(asyncio.DatagramProtocol):
    def __init__(
        self,
        target: tuple[str, int],
        loss: float = 0.02,
        duplicate: float = 0.01,
        reorder: float = 0.05,
        jitter: float = 0.030,
        seed: int = 1,
        clean_start: int = 10,
    ) -> None:
        self.target = target
        self.loss, self.duplicate, self.reorder, self.jitter = loss, duplicate, reorder, jitter
        self.rng = random.Random(seed)
        self.clean_start = clean_start  # the first packets pass untouched: they start the receiver's window
        self.received = 0
        self.last_received = 0.0  # loop time of the latest datagram from the sender
        self.dropped: list[int] = []
        self.duplicated = 0
        self.swapped = 0
        self.sent: list[int] = []  # 16-bit sequence numbers in the order they were sent
        self.sent_types: list[int] = []  # their payload types (a retransmission stream has its own)
        self.dropped_types: list[int] = []  # the payload types of the dropped packets
        self._held: bytes | None = None
        self._line: deque[tuple[float, bytes]] = deque()
        self._last_due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        self.last_received = asyncio.get_running_loop().time()
        if self.received <= self.clean_start:
            self._emit(data)
            return
        roll = self.rng.random()
        if roll < self.loss:
            self.dropped.append(struct.unpack_from(">H", data, 2)[0])
            self.dropped_types.append(data[1] & 0x7F)
        elif roll < self.loss + self.duplicate:
            self.duplicated += 1
            self._emit(data)
            self._emit(data)
        elif roll < self.loss + self.duplicate + self.reorder and self._held is None:
            self.swapped += 1
            self._held = data  # goes out right after the next packet
            return
        else:
            self._emit(data)
        if self._held is not None and roll >= self.loss:
            held, self._held = self._held, None
            self._emit(held)

    def _emit(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        due = max(self._last_due, loop.time() + self.rng.uniform(0.0, self.jitter))
        self._last_due = due
        self._line.append((due, data))
        if self._timer is None:
            self._timer = loop.call_at(due, self._release)

    def _release(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        now = loop.time()
        while self._line and self._line[0][0] <= now:
            _, data = self._line.popleft()
            self.sent.append(struct.unpack_from(">H", data, 2)[0])
            self.sent_types.append(data[1] & 0x7F)
            assert self.transport is not None
            self.transport.sendto(data, self.target)
        if self._line:
            self._timer = loop.call_at(self._line[0][0], self._release)

    def expected(self, payload_type: int | None = None) -> Expected:
        """Counters by definition, from the log of what was sent (of one payload type: a
        retransmission stream numbers its packets apart)."""
        seen: set[int] = set()
        highest = None
        duplicates = reordered = 0
        ext = None
        sent = [s for s, t in zip(self.sent, self.sent_types) if payload_type in (None, t)]
        for seq in sent:
            ext = seq if ext is None else ext + ((seq - ext + 0x8000) & 0xFFFF) - 0x8000
            if ext in seen:
                duplicates += 1
                continue
            seen.add(ext)
            if highest is not None and ext < highest:
                reordered += 1
            highest = ext if highest is None else max(highest, ext)
        lost_ext = set(range(min(seen), max(seen) + 1)) - seen if seen else set()
        return Expected(len(lost_ext), duplicates, reordered, len(seen), {s & 0xFFFF for s in lost_ext})


class RtcpRelay(asyncio.DatagramProtocol):
    """Sender -> receiver unchanged; receiver -> sender recorded (NACKs, receiver reports),
    and sent back to where the sender's RTCP came from, or to `reply_to` (a sender that
    reads RTCP on another port than it sends from, as gst-launch's udpsrc/udpsink pairs)."""

    def __init__(self, target: tuple[str, int], reply_to: tuple[str, int] | None = None) -> None:
        self.target = target
        self.reply_to = reply_to
        self.sender: tuple[str, int] | None = None
        self.from_receiver: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.target:
            self.from_receiver.append(data)
            back = self.reply_to or self.sender
            if back is not None:
                self.transport.sendto(data, back)
        else:
            self.sender = addr
            self.transport.sendto(data, self.target)

"""RTP jitter buffer: reorders, drops duplicates and late packets, detects losses for NACK,
estimates jitter (RFC 3550 A.8) and adapts its playout delay to it.

Packets are released in sequence order: at once when they are next in line, otherwise
when the packet waiting behind a gap has waited the playout delay (then the gap is
declared lost). The reorder window is bounded by packet count and by time. A sequence jump
larger than `resync_packets`, or a new SSRC, resynchronises once instead of muting the
stream. Time (`now`, seconds) is passed in. This one source is also compiled by Cython
(cython_ext/jitter_buffer.pxd), so the two builds cannot drift apart; the per-slot state
lives in typed arrays, which the compiled build reads as C arrays.

Defaults: `capacity` 2048 packets holds about 2 s of 8 Mbit/s video (the reorder window's
count bound); delays in seconds: `min_delay`/`max_delay` bound the adaptive playout delay,
`max_wait` the time bound of the window, `loss_dwell` how long a gap waits before a NACK
(fixed, not taken from the jitter: the RTP timestamps of video with B-frames jump back and
forth by frame intervals, so RFC 3550 jitter measures the encoder's reordering as much as
the network's; the playout delay still follows it).
`max_nacks` is how often one missing packet is asked for (1: senders that do not
retransmit ignore it anyway), `nack_interval` the least time between two asks (about a
round trip, so a retransmission under way is not asked for again); no packet is asked for
once an answer, no sooner than `nack_interval` from now, would come after its gap is
given up.
"""

from array import array

MAX_DELAY = 0.5
"""Default most playout delay, seconds: four times the jitter stops growing here, half a
second of latency; a track whose sender retransmits may be given a longer floor."""


class JitterBuffer:
    def __init__(
        self,
        clock_rate: int,
        capacity: int = 2048,
        min_delay: float = 0.02,
        max_delay: float = MAX_DELAY,
        max_wait: float = 1.0,
        loss_dwell: float = 0.02,
        resync_packets: int = 3000,
        max_nacks: int = 1,
        nack_interval: float = 0.0,
    ) -> None:
        if capacity < 8 or capacity & (capacity - 1):
            raise ValueError("capacity must be a power of two, at least 8")
        self.clock_rate = clock_rate
        self.capacity = capacity
        self._mask = capacity - 1
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_wait = max_wait
        self.loss_dwell = loss_dwell
        self.resync_packets = resync_packets
        if not 1 <= max_nacks <= 100:
            raise ValueError("max_nacks must be 1-100")
        self.max_nacks = max_nacks
        self.nack_interval = nack_interval
        self._payloads: list = [None] * capacity
        self._arrivals = array("d", [0.0]) * capacity
        self._seqs = array("q", [-1]) * capacity
        self._missing_since = array("d", [-1.0]) * capacity  # when a gap at this slot was first seen
        self._nacked = array("b", [0]) * capacity  # times the packet at this slot was asked for
        self._ready: list = []  # released early because the window overflowed
        self._ssrc = -1
        self._next = -1  # extended sequence number expected next
        self._highest = -1  # highest extended sequence number received
        self._last_transit = 0.0
        self._have_transit = False
        self.jitter = 0.0  # RFC 3550 interarrival jitter, timestamp units
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.reordered = 0
        self.resyncs = 0
        self.released = 0

    @property
    def delay(self) -> float:
        """Current playout delay in seconds: four times the jitter, within the bounds."""
        return self._delay()

    def _delay(self) -> float:
        d = 4.0 * self.jitter / self.clock_rate
        if d < self.min_delay:
            return self.min_delay
        if d > self.max_delay:
            return self.max_delay
        return d

    @property
    def highest_sequence(self) -> int:
        """Highest extended sequence number received (-1 before the first packet)."""
        return self._highest

    def __len__(self) -> int:
        if self._next < 0:
            return 0
        count = 0
        for s in range(self._next, self._highest + 1):
            if self._seqs[s & self._mask] == s:
                count += 1
        return count

    def _extend(self, seq: int) -> int:
        """16-bit sequence number -> extended, by the shortest distance from the expected."""
        d = (seq - self._next) & 0xFFFF
        if d >= 0x8000:
            d -= 0x10000
        return self._next + d

    def _reset(self, ext: int) -> None:
        if self._next >= 0:
            self._skip_to(self._highest + 1)  # hand over what is buffered before starting again
        for i in range(self.capacity):
            self._payloads[i] = None
            self._seqs[i] = -1
            self._missing_since[i] = -1.0
            self._nacked[i] = 0
        self._next = ext
        self._highest = ext - 1
        self._have_transit = False

    def push(
        self, seq: int, timestamp: int, ssrc: int, payload: object, now: float, retransmitted: bool = False
    ) -> bool:
        """Offer one packet; False if it was dropped (duplicate or late). A retransmitted
        packet (RFC 4588) leaves the jitter estimate alone: its delay is the repair's, not
        the network's."""
        if ssrc != self._ssrc:
            if self._ssrc != -1:
                self.resyncs += 1
            self._ssrc = ssrc
            self._reset(seq)
        ext = self._extend(seq)
        if ext - self._next >= self.resync_packets:
            # The sender jumped (restart, splice): resynchronise once rather than wait for,
            # or mute, thousands of packets. A stray packet far behind is merely late.
            self.resyncs += 1
            self._reset(seq)
            ext = seq
        if ext < self._next:
            index = ext & self._mask
            if self._seqs[index] == ext or self._next - ext > self.capacity:
                self.duplicates += 1  # already released (or too old to tell): treat as duplicate
            else:
                self.late += 1
            return False
        index = ext & self._mask
        if self._seqs[index] == ext:
            self.duplicates += 1
            return False
        if ext - self._next >= self.capacity:
            self._skip_to(ext - self.capacity + 1)  # window full by count: give up the oldest gap
        self.received += 1
        # RFC 3550 A.8 interarrival jitter.
        if not retransmitted:
            transit = now * self.clock_rate - timestamp
            if self._have_transit:
                d = transit - self._last_transit
                if d < 0:
                    d = -d
                self.jitter += (d - self.jitter) / 16.0
            self._last_transit = transit
            self._have_transit = True
        if ext < self._highest:
            self.reordered += 1
        elif ext > self._highest + 1:
            for s in range(self._highest + 1, ext):
                gap = s & self._mask
                self._missing_since[gap] = now
                self._nacked[gap] = 0
        if ext > self._highest:
            self._highest = ext
        self._payloads[index] = payload
        self._arrivals[index] = now
        self._seqs[index] = ext
        self._missing_since[index] = -1.0
        return True

    def _skip_to(self, ext: int) -> None:
        """Move the window start to `ext`: packets in between are released, gaps lost."""
        while self._next < ext:
            index = self._next & self._mask
            if self._seqs[index] != self._next:
                self.lost += 1
            else:
                self._ready.append(self._payloads[index])
                self._payloads[index] = None
                self.released += 1
            self._next += 1

    def pop(self, now: float) -> list:
        """Packets ready for the depacketizer, in sequence order."""
        out: list[object] = self._ready
        self._ready = []
        if self._next < 0:
            return out
        delay = self._delay()
        while self._next <= self._highest:
            index = self._next & self._mask
            if self._seqs[index] == self._next:
                out.append(self._payloads[index])
                self._payloads[index] = None
                self._next += 1
                self.released += 1
                continue
            # A gap: wait for the first packet behind it to have waited the playout delay,
            # or for the window to span more than max_wait.
            s = self._next + 1
            while s <= self._highest and self._seqs[s & self._mask] != s:
                s += 1
            waited = now - self._arrivals[s & self._mask]
            if waited >= delay or waited >= self.max_wait:
                self.lost += s - self._next
                self._next = s
                continue
            break
        return out

    def nacks(self, now: float) -> list:
        """Sequence numbers (16-bit) to ask for, ascending: missing for loss_dwell, asked
        for fewer than max_nacks times and not within nack_interval, and whose gap is given
        up no sooner than an answer to an ask now could arrive (nack_interval from now):
        the packet behind the gap has not yet waited the playout delay."""
        out: list[object] = []
        if self._next < 0:
            return out
        delay = self._delay()
        deadline = 0.0  # when the gap being looked at is given up
        s = self._highest
        while s >= self._next:  # downwards: each gap meets the packet behind it first
            index = s & self._mask
            if self._seqs[index] == s:
                deadline = self._arrivals[index] + delay
            else:
                asked = self._nacked[index]
                since = self._missing_since[index]
                if (
                    asked < self.max_nacks
                    and since >= 0.0
                    and now - since >= self.loss_dwell + asked * self.nack_interval
                    and now + self.nack_interval <= deadline
                ):
                    self._nacked[index] = asked + 1
                    out.append(s & 0xFFFF)
            s -= 1
        out.reverse()
        return out

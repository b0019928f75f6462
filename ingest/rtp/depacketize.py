"""RTP payloads -> access units: H.264 (RFC 6184), AAC (RFC 3640, AAC-hbr) and Opus (RFC 7587).

H.264: single NAL units, STAP-A (each inner length checked) and FU-A (fragments whose start
was never seen are dropped; S and E both set is tolerated; the forbidden bit is ignored).
An access unit is complete on the marker bit or when the timestamp changes. Output is
length-prefixed (AVCC) with parameter sets kept for the avcC record.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediacore.h264 import NAL_IDR, NAL_PPS, NAL_SPS

from .errors import RtpError
from .packet import RtpPacket

STAP_A = 24
FU_A = 28
MAX_ACCESS_UNIT = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AccessUnit:
    timestamp: int  # RTP timestamp (32-bit, as sent)
    data: bytes  # H.264: AVCC; AAC: one raw frame
    keyframe: bool


class H264Depacketizer:
    def __init__(self, parameter_sets: list[bytes] | None = None) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        for ps in parameter_sets or []:
            self._parameter_set(ps)
        self._nalus: list[bytes] = []
        self._size = 0
        self._timestamp: int | None = None
        self._fragment: list[bytes] | None = None  # the FU-A NAL unit in progress, in pieces
        self._fragment_size = 0
        self._damaged = False  # the access unit in progress lost a packet
        self._next_damaged = False  # a gap came before the next packet: its unit may be incomplete
        self._need_keyframe = False
        self.dropped_fragments = 0
        self.damaged_units = 0  # dropped because a packet of theirs was lost
        self.skipped_units = 0  # dropped while waiting for a keyframe after a damaged one
        self.errors = 0

    def lost(self) -> None:
        """Packets were lost just before the next one pushed. The unit in progress and the
        unit of the next packet may both be incomplete: neither is passed on, and nothing
        after them until the next keyframe either. Browsers' decoders (Chromium's among
        them) fail outright on a truncated slice or a frame whose reference is missing,
        so the picture freezes until a keyframe instead (`wants_keyframe` asks the sender
        for one early, with an RTCP PLI)."""
        if self._timestamp is not None:
            self._damaged = True
        self._next_damaged = True
        self._fragment = None

    def _parameter_set(self, nal: bytes) -> None:
        if nal and nal[0] & 0x1F == NAL_SPS:
            self.sps = bytes(nal)
        elif nal and nal[0] & 0x1F == NAL_PPS:
            self.pps = bytes(nal)

    def _add(self, nal: bytes) -> None:
        if not nal:
            return
        self._parameter_set(nal)
        self._size += len(nal) + 4
        if self._size > MAX_ACCESS_UNIT:
            raise RtpError(f"H.264 access unit larger than {MAX_ACCESS_UNIT} bytes")
        self._nalus.append(nal)

    @property
    def wants_keyframe(self) -> bool:
        return self._need_keyframe

    def _flush(self) -> list[AccessUnit]:
        damaged, self._damaged = self._damaged, False
        if (not self._nalus and not damaged) or self._timestamp is None:
            self._nalus = []
            self._size = 0
            return []
        keyframe = any(n[0] & 0x1F == NAL_IDR for n in self._nalus)
        if damaged or (self._need_keyframe and not keyframe):
            if damaged:
                self.damaged_units += 1
                self._need_keyframe = True
            else:
                self.skipped_units += 1
            self._nalus = []
            self._size = 0
            return []
        self._need_keyframe = False
        parts = []
        for nal in self._nalus:
            parts.append(len(nal).to_bytes(4, "big"))
            parts.append(nal)
        data = b"".join(parts)
        unit = AccessUnit(self._timestamp, data, keyframe)
        self._nalus = []
        self._size = 0
        return [unit]

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        out: list[AccessUnit] = []
        if self._timestamp is not None and packet.timestamp != self._timestamp:
            out += self._flush()
            self._fragment = None
            self._timestamp = None
        if self._next_damaged:
            self._damaged = True  # the unit this packet starts or continues
            self._next_damaged = False
        self._timestamp = packet.timestamp
        # Read the datagram in place: the only copies are the NAL units themselves.
        data, pos, stop = packet.data, packet.payload_start, packet.payload_end
        if pos >= stop:
            return out
        nal_type = data[pos] & 0x1F
        if 1 <= nal_type <= 23:
            self._add(data[pos:stop])
        elif nal_type == STAP_A:
            pos += 1
            while pos + 2 <= stop:
                size = data[pos] << 8 | data[pos + 1]
                pos += 2
                if size == 0 or pos + size > stop:
                    self.errors += 1
                    raise RtpError(f"STAP-A inner NAL unit declares {size} bytes, {stop - pos} remain")
                self._add(data[pos : pos + size])
                pos += size
        elif nal_type == FU_A:
            if stop - pos < 2:
                raise RtpError("FU-A packet shorter than its 2-byte header")
            indicator, header = data[pos], data[pos + 1]
            if header & 0x80:
                self._fragment = [bytes(((indicator & 0xE0) | (header & 0x1F),))]
                self._fragment_size = 1
            if self._fragment is None:
                self.dropped_fragments += 1  # its start was never seen
            else:
                self._fragment_size += stop - pos - 2
                if self._fragment_size > MAX_ACCESS_UNIT:
                    raise RtpError(f"FU-A NAL unit larger than {MAX_ACCESS_UNIT} bytes")
                self._fragment.append(data[pos + 2 : stop])
                if header & 0x40:
                    self._add(b"".join(self._fragment))
                    self._fragment = None
        else:
            self.errors += 1  # STAP-B, MTAP, FU-B: not used by packetization-mode 0/1 senders
        if packet.marker:
            out += self._flush()
            self._timestamp = None
        return out


class AacDepacketizer:
    """RFC 3640 AAC-hbr: AU-headers-length, then 13-bit sizes with 3-bit indices."""

    def __init__(self, size_length: int = 13, index_length: int = 3, index_delta_length: int = 3,
                 samples_per_frame: int = 1024) -> None:
        if not 1 <= size_length <= 16 or not 0 <= index_length <= 8:
            raise RtpError("AAC sizelength/indexlength out of range")
        self.size_length = size_length
        self.index_length = index_length
        self.index_delta_length = index_delta_length
        self.samples_per_frame = samples_per_frame

    def lost(self) -> None:
        """Each AAC access unit is whole in its packet: a loss takes nothing else with it."""

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        payload = packet.payload
        if len(payload) < 2:
            raise RtpError("AAC RTP payload shorter than its AU-headers-length")
        header_bits = int.from_bytes(payload[:2], "big")
        header_bytes = (header_bits + 7) // 8
        if 2 + header_bytes > len(payload):
            raise RtpError(f"AAC AU headers of {header_bits} bits run past the payload")
        bits = int.from_bytes(payload[2 : 2 + header_bytes], "big") if header_bytes else 0
        total = header_bytes * 8
        sizes = []
        used = 0
        first = True
        while used + self.size_length <= header_bits:
            width = self.size_length + (self.index_length if first else self.index_delta_length)
            if used + width > header_bits:
                break
            field = (bits >> (total - used - width)) & ((1 << width) - 1)
            sizes.append(field >> (self.index_length if first else self.index_delta_length))
            used += width
            first = False
        out = []
        pos = 2 + header_bytes
        for i, size in enumerate(sizes):
            if pos + size > len(payload):
                raise RtpError(f"AAC access unit declares {size} bytes past the payload")
            out.append(AccessUnit((packet.timestamp + i * self.samples_per_frame) & 0xFFFFFFFF,
                                  bytes(payload[pos : pos + size]), True))
            pos += size
        return out


# Opus frame durations (in 48 kHz samples) by TOC config number, RFC 6716 section 3.1.
_OPUS_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK-only: 10, 20, 40, 60 ms (NB, MB, WB)
    + [480, 960] * 2  # Hybrid: 10, 20 ms (SWB, FB)
    + [120, 240, 480, 960] * 4  # CELT-only: 2.5, 5, 10, 20 ms (NB, WB, SWB, FB)
)
MAX_OPUS_PACKET_SAMPLES = 5760  # 120 ms, RFC 6716 section 3.2.5


def opus_packet_samples(packet: bytes) -> int:
    """Duration of one Opus packet in 48 kHz samples, checked against RFC 6716's limits."""
    if not packet:
        raise RtpError("empty Opus packet")
    toc = packet[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            raise RtpError("Opus code-3 packet without its frame count byte")
        frames = packet[1] & 0x3F
        if frames == 0:
            raise RtpError("Opus code-3 packet declares zero frames")
    samples = frames * _OPUS_FRAME_SAMPLES[toc >> 3]
    if samples > MAX_OPUS_PACKET_SAMPLES:
        raise RtpError(f"Opus packet of {samples / 48:g} ms exceeds the 120 ms limit")
    return samples


class OpusDepacketizer:
    """RFC 7587: one Opus packet per RTP payload, timestamps at 48 kHz whatever the SDP says
    about the audio bandwidth. Each packet's TOC is checked before it goes on."""

    def lost(self) -> None:
        """The transcoder fills the hole with silence."""

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        payload = packet.payload
        opus_packet_samples(payload)
        return [AccessUnit(packet.timestamp, bytes(payload), True)]

"""RTP payloads -> access units: AAC (RFC 3640, AAC-hbr) and Opus (RFC 7587) here; H.264
(RFC 6184) in h264_depacketize.py, which has a compiled twin, and AAC in LATM (RFC 6416)
in latm.py, both re-exported here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .access_unit import AccessUnit
from .errors import RtpError
from .latm import LatmDepacketizer
from .packet import RtpPacket

if TYPE_CHECKING:  # both builds have the same interface; the checker reads the Python source
    from .h264_depacketize import H264Depacketizer
else:
    from ingest.rtp.compiled import H264Depacketizer

__all__ = [
    "AccessUnit",
    "AacDepacketizer",
    "H264Depacketizer",
    "LatmDepacketizer",
    "OpusDepacketizer",
    "opus_packet_samples",
]


class AacDepacketizer:
    """RFC 3640 AAC-hbr: AU-headers-length, then 13-bit sizes with 3-bit indices."""

    def __init__(
        self, size_length: int = 13, index_length: int = 3, index_delta_length: int = 3, samples_per_frame: int = 1024
    ) -> None:
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
            out.append(
                AccessUnit(
                    (packet.timestamp + i * self.samples_per_frame) & 0xFFFFFFFF, bytes(payload[pos : pos + size]), True
                )
            )
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

"""RTCP packets (RFC 3550, RFC 4585 generic NACK and PLI): parse_rtcp() and serialize().
RTP data packets live in rtp_packet.py (compiled twin); they are re-exported here.

Every header field is checked against the datagram length before it is used. Parsing
never allocates more than the datagram.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import RtpError
from .rtp_packet import RTP_VERSION

if TYPE_CHECKING:  # both builds have the same interface; the checker reads the Python source
    from .rtp_packet import RtpPacket, parse_rtp
else:
    from ingest.rtp.compiled import RtpPacket, parse_rtp

RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE, RTCP_RTPFB, RTCP_PSFB = 200, 201, 202, 203, 205, 206
NACK_FMT = 1
PLI_FMT = 1


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp_seconds: float  # NTP time as seconds since 1900
    rtp_timestamp: int
    packets: int
    octets: int

    @property
    def unix_time(self) -> float:
        return self.ntp_seconds - 2_208_988_800


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_sequence: int
    jitter: int
    last_sr: int = 0
    delay_since_last_sr: int = 0


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    blocks: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = struct.pack(">I", self.ssrc)
        for b in self.blocks:
            lost = b.cumulative_lost & 0xFFFFFF
            body += struct.pack(
                ">IBBHIIII",
                b.ssrc,
                b.fraction_lost,
                lost >> 16,
                lost & 0xFFFF,
                b.highest_sequence,
                b.jitter,
                b.last_sr,
                b.delay_since_last_sr,
            )[:24]
        return _rtcp_header(len(self.blocks), RTCP_RR, body) + body


@dataclass(slots=True)
class Nack:
    """Generic NACK (RFC 4585 6.2.1): lost sequence numbers, packed as PID + bitmask pairs."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    def serialize(self) -> bytes:
        fci = b""
        pending = sorted(set(s & 0xFFFF for s in self.lost))
        while pending:
            pid = pending.pop(0)
            mask = 0
            while pending and 0 < (pending[0] - pid) & 0xFFFF <= 16:
                mask |= 1 << (((pending.pop(0) - pid) & 0xFFFF) - 1)
            fci += struct.pack(">HH", pid, mask)
        body = struct.pack(">II", self.sender_ssrc, self.media_ssrc) + fci
        return _rtcp_header(NACK_FMT, RTCP_RTPFB, body) + body


def _rtcp_header(count: int, packet_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", (RTP_VERSION << 6) | count, packet_type, len(body) // 4)


@dataclass(slots=True)
class Pli:
    """Picture Loss Indication (RFC 4585 6.3.1): asks the sender for a keyframe."""

    sender_ssrc: int
    media_ssrc: int

    def serialize(self) -> bytes:
        body = struct.pack(">II", self.sender_ssrc, self.media_ssrc)
        return _rtcp_header(PLI_FMT, RTCP_PSFB, body) + body


__all__ = [
    "RtpPacket",
    "parse_rtp",
    "RtpError",
    "SenderReport",
    "ReportBlock",
    "ReceiverReport",
    "Nack",
    "Pli",
    "parse_rtcp",
    "RTP_VERSION",
]

RtcpPacket = SenderReport | ReceiverReport | Nack | Pli


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """A compound RTCP datagram: SR, RR and generic NACK are decoded, others skipped."""
    out: list[RtcpPacket] = []
    pos = 0
    size = len(data)
    while pos < size:
        if pos + 4 > size:
            raise RtpError("RTCP header truncated")
        b0, packet_type, words = struct.unpack_from(">BBH", data, pos)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {b0 >> 6}, not 2")
        length = 4 * (words + 1)
        if pos + length > size:
            raise RtpError(f"RTCP length {length} runs past the datagram ({size - pos} bytes left)")
        body = data[pos + 4 : pos + length]
        count = b0 & 0x1F
        if packet_type == RTCP_SR:
            if len(body) < 24:
                raise RtpError("RTCP sender report shorter than 24 bytes")
            ssrc, ntp_hi, ntp_lo, rtp_ts, packets, octets = struct.unpack_from(">IIIIII", body)
            out.append(SenderReport(ssrc, ntp_hi + ntp_lo / 2**32, rtp_ts, packets, octets))
        elif packet_type == RTCP_RR:
            if len(body) < 4 + 24 * count:
                raise RtpError(f"RTCP receiver report with {count} blocks is truncated")
            (ssrc,) = struct.unpack_from(">I", body)
            blocks = []
            for i in range(count):
                bssrc, frac, lost_hi, lost_lo, highest, jitter, lsr, dlsr = struct.unpack_from(
                    ">IBBHIIII", body, 4 + 24 * i
                )
                blocks.append(ReportBlock(bssrc, frac, (lost_hi << 16) | lost_lo, highest, jitter, lsr, dlsr))
            out.append(ReceiverReport(ssrc, blocks))
        elif packet_type == RTCP_RTPFB and count == NACK_FMT:
            if len(body) < 8:
                raise RtpError("RTCP NACK shorter than 8 bytes")
            sender, media = struct.unpack_from(">II", body)
            lost = []
            for off in range(8, len(body) - 3, 4):
                pid, mask = struct.unpack_from(">HH", body, off)
                lost.append(pid)
                lost += [(pid + i + 1) & 0xFFFF for i in range(16) if mask >> i & 1]
            out.append(Nack(sender, media, lost))
        elif packet_type == RTCP_PSFB and count == PLI_FMT:
            if len(body) < 8:
                raise RtpError("RTCP PLI shorter than 8 bytes")
            out.append(Pli(*struct.unpack_from(">II", body)))
        pos += length
    return out

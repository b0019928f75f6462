"""RTP data packets (RFC 3550 5.1): parse_rtp() and RtpPacket.serialize().

Every header field is checked against the datagram length before it is used: version,
padding (its count must fit in the payload), extension (its declared length must fit),
CSRC count (15 CSRCs need 72 bytes). Parsing never allocates more than the datagram.

Parsing copies nothing: a packet keeps the datagram and the payload's bounds, and the
payload is cut out when a depacketizer asks for it. Duplicates, late packets and packets of
another payload type are dropped without ever copying their payload.

This is the per-packet hot path of RTP ingest, so this one source is also compiled by
Cython (cython_ext/rtp_packet.pxd makes RtpPacket a C struct and parse_rtp a C function);
the header is read byte by byte, which both builds do well. `ingest.rtp.compiled` picks the
build.
"""

from __future__ import annotations

import struct

from ingest.rtp.errors import RtpError

RTP_VERSION = 2


class RtpPacket:
    __slots__ = (
        "payload_type",
        "sequence",
        "timestamp",
        "ssrc",
        "data",
        "payload_start",
        "payload_end",
        "marker",
        "csrcs",
        "extension_profile",
        "extension",
        "padding",
    )

    def __init__(
        self,
        payload_type: int,
        sequence: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        marker: bool = False,
        csrcs: tuple[int, ...] = (),
        extension_profile: int | None = None,
        extension: bytes = b"",
        padding: int = 0,
    ) -> None:
        self.payload_type = payload_type
        self.sequence = sequence
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.data = payload
        self.payload_start = 0
        self.payload_end = len(payload)
        self.marker = marker
        self.csrcs = tuple(csrcs)
        self.extension_profile = extension_profile
        self.extension = extension
        self.padding = padding

    @property
    def payload(self) -> bytes:
        """The payload, cut out of the datagram (a copy: read it once)."""
        if self.payload_start == 0 and self.payload_end == len(self.data):
            return self.data
        return self.data[self.payload_start : self.payload_end]

    @property
    def payload_size(self) -> int:
        return self.payload_end - self.payload_start

    def fields(self) -> tuple:
        return (
            self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
            self.payload,
            self.marker,
            self.csrcs,
            self.extension_profile,
            self.extension,
            self.padding,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RtpPacket):
            return NotImplemented
        return self.fields() == other.fields()

    def __repr__(self) -> str:
        return (
            f"RtpPacket(pt={self.payload_type}, seq={self.sequence}, ts={self.timestamp}, ssrc={self.ssrc:#x}, "
            f"marker={self.marker}, payload={self.payload_size} bytes)"
        )

    def serialize(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        ext = b""
        if self.extension_profile is not None:
            b0 |= 0x10
            ext = struct.pack(">HH", self.extension_profile, len(self.extension) // 4) + self.extension
        pad = b""
        if self.padding:
            b0 |= 0x20
            pad = b"\x00" * (self.padding - 1) + bytes((self.padding,))
        header = struct.pack(
            ">BBHII", b0, (0x80 if self.marker else 0) | self.payload_type, self.sequence, self.timestamp, self.ssrc
        )
        return header + b"".join(struct.pack(">I", c) for c in self.csrcs) + ext + self.payload + pad


def parse_rtp(data: bytes) -> RtpPacket:
    size = len(data)
    if size < 12:
        raise RtpError(f"RTP packet of {size} bytes is shorter than its 12-byte header")
    b0 = data[0]
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, not 2")
    cc = b0 & 0x0F
    pos = 12 + 4 * cc
    if pos > size:
        raise RtpError(f"CSRC count {cc} needs {pos} bytes, the packet has {size}")
    packet = RtpPacket.__new__(RtpPacket)
    b1 = data[1]
    packet.payload_type = b1 & 0x7F
    packet.marker = b1 >= 0x80
    packet.sequence = data[2] << 8 | data[3]
    hi = data[4] << 8 | data[5]  # 16-bit halves: no intermediate overflows a C unsigned int
    lo = data[6] << 8 | data[7]
    packet.timestamp = hi << 16 | lo
    hi = data[8] << 8 | data[9]
    lo = data[10] << 8 | data[11]
    packet.ssrc = hi << 16 | lo
    packet.csrcs = struct.unpack_from(f">{cc}I", data, 12) if cc else ()
    packet.extension_profile = None
    packet.extension = b""
    if b0 & 0x10:
        if pos + 4 > size:
            raise RtpError("RTP extension header past the end of the packet")
        words = data[pos + 2] << 8 | data[pos + 3]
        end = pos + 4 + 4 * words
        if end > size:
            raise RtpError(f"RTP extension of {4 * words} bytes runs past the packet ({size} bytes)")
        packet.extension_profile = data[pos] << 8 | data[pos + 1]
        packet.extension = data[pos + 4 : end]
        pos = end
    padding = 0
    end = size
    if b0 & 0x20:
        padding = data[size - 1]
        if padding == 0 or pos + padding > size:
            raise RtpError(f"RTP padding of {padding} bytes is longer than the payload")
        end -= padding
    packet.padding = padding
    packet.data = data
    packet.payload_start = pos
    packet.payload_end = end
    return packet

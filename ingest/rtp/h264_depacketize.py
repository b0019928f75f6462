"""RTP payloads -> H.264 access units (RFC 6184): single NAL units, STAP-A (each inner
length checked) and FU-A (fragments whose start was never seen are dropped; S and E both set
is tolerated; the forbidden bit is ignored). An access unit is complete on the marker bit or
when the timestamp changes. Output is length-prefixed (AVCC) with parameter sets kept for
the avcC record.

It reads every video packet, so this one source is also compiled by Cython
(cython_ext/h264_depacketize.pxd); `ingest.rtp.compiled` picks the build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.rtp.access_unit import AccessUnit
from ingest.rtp.errors import RtpError
from mediacore.model.h264 import NAL_IDR, NAL_PPS, NAL_SPS

if TYPE_CHECKING:
    from ingest.rtp.rtp_packet import RtpPacket

STAP_A = 24
FU_A = 28
MAX_ACCESS_UNIT = 8 * 1024 * 1024


class H264Depacketizer:
    def __init__(self, parameter_sets: list[bytes] | None = None, repair: bool = False) -> None:
        """`repair`: the access units go to a decoder that conceals losses (ingest/rtp/repair.py),
        not to players: every unit is passed with the NAL units of it that arrived whole, and
        nothing waits for a keyframe."""
        self.repair = repair
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
        self._gap_timestamp: int | None = None  # timestamp of the unit in progress when the gap came
        self._confined = False  # the loss fell inside the unit in progress, nowhere else
        self._ref_slice = False  # the unit in progress has a slice with nal_ref_idc != 0
        self._nonref_slice = False  # ... and one with nal_ref_idc == 0
        self._need_keyframe = False
        self.dropped_fragments = 0
        self.damaged_units = 0  # dropped because a packet of theirs was lost
        self.skipped_units = 0  # dropped while waiting for a keyframe after a damaged one
        self.nonref_damaged_units = 0  # damaged but referenced by nothing: only they were dropped
        self.errors = 0

    def lost(self) -> None:
        """Packets were lost just before the next one pushed. The unit in progress and the
        unit of the next packet may both be incomplete: neither is passed on, and nothing
        after them until the next keyframe either. Chromium's decoder fails the media
        element outright on a truncated slice or a frame whose reference is missing (the
        trade-off and its measurements: docs/rtp-ingest.md, "Why freezes, not artifacts"),
        so the picture freezes until a keyframe instead (`wants_keyframe` asks the sender
        for one early, with an RTCP PLI).

        One case costs only the damaged frame: when the packet after the gap continues the
        unit in progress (same timestamp; an access unit's packets are consecutive, so the
        gap held nothing else) and that unit is a non-reference picture (nal_ref_idc 0,
        which H.264 requires of all its slices alike), no other frame refers to it.

        With `repair`, both units are passed on all the same, with what arrived whole."""
        if self._timestamp is not None:
            self._damaged = True
        self._gap_timestamp = self._timestamp
        self._confined = False  # decided by the next packet
        self._next_damaged = True
        self._fragment = None

    def _slice(self, header: int) -> None:
        """Note the reference flag of a slice NAL unit (types 1-5) of the unit in progress."""
        if 1 <= header & 0x1F <= 5:
            if header & 0x60:
                self._ref_slice = True
            else:
                self._nonref_slice = True

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
        disposable = self._confined and self._nonref_slice and not self._ref_slice
        self._confined = self._ref_slice = self._nonref_slice = False
        if (not self._nalus and not damaged) or self._timestamp is None:
            self._nalus = []
            self._size = 0
            return []
        keyframe = any(n[0] & 0x1F == NAL_IDR for n in self._nalus)
        if self.repair:
            if damaged:
                self.damaged_units += 1
            if not self._nalus:
                return []  # nothing of it arrived whole: the repair fills its place
        elif damaged or (self._need_keyframe and not keyframe):
            if damaged:
                self.damaged_units += 1
                if disposable:
                    self.nonref_damaged_units += 1
                else:
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
            self._confined = self._gap_timestamp is not None and packet.timestamp == self._gap_timestamp
            self._next_damaged = False
        self._timestamp = packet.timestamp
        # Read the datagram in place: the only copies are the NAL units themselves.
        data, pos, stop = packet.data, packet.payload_start, packet.payload_end
        if pos >= stop:
            return out
        nal_type = data[pos] & 0x1F
        if 1 <= nal_type <= 23:
            self._slice(data[pos])
            self._add(data[pos:stop])
        elif nal_type == STAP_A:
            pos += 1
            while pos + 2 <= stop:
                size = data[pos] << 8 | data[pos + 1]
                pos += 2
                if size == 0 or pos + size > stop:
                    self.errors += 1
                    raise RtpError(f"STAP-A inner NAL unit declares {size} bytes, {stop - pos} remain")
                self._slice(data[pos])
                self._add(data[pos : pos + size])
                pos += size
        elif nal_type == FU_A:
            if stop - pos < 2:
                raise RtpError("FU-A packet shorter than its 2-byte header")
            indicator, header = data[pos], data[pos + 1]
            self._slice((indicator & 0xE0) | (header & 0x1F))  # every fragment tells the NAL's type and NRI
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

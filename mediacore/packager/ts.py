"""MPEG-TS segments (ISO 13818-1): one program of H.264 video, AAC audio and timed ID3.

The muxer is ours, not libavformat's, because a segment's bytes are few fixed structures
repeated per frame: PAT and PMT, then per frame a PES header and its payload cut into
188-byte packets (mediacore/packager/ts_packets.py, compiled when built). Written by hand it
costs a fraction of a fresh libavformat muxer per segment and a pass afterwards to remove its
SDT and renumber its continuity counters, which is what it replaced.

What a segment holds, so that each is playable on its own and continues the previous one:
- PAT then PMT first (E5), once: an HLS segment is fetched whole and from its start.
- Continuity counters that run on across segments, per PID, PAT and PMT included (E2).
- Fixed PIDs per kind (video 0x100, audio 0x101, ID3 0x102, PMT 0x1000), so a segment whose
  first frame is audio does not swap them.
- One PMT for the stream's life: it lists every kind the stream has had, so a segment of
  audio alone (video stalled) declares the same program; should a kind be added, the PMT's
  version_number steps (ISO 13818-1 2.4.4.9).
- Video as Annex B (AUD, then SPS/PPS before each IDR: mediacore/model/h264.py) with PTS and,
  where it differs, DTS; random access indicator on keyframes. Audio as one ADTS frame per
  PES.
- A PCR equal to the DTS (modulo 2^33) on each PES of the PCR PID (video, or audio when the
  stream has none), and a PCR-only packet on that PID before any other PES that comes more
  than PCR_INTERVAL_90K after the last PCR (audio while video is stalled), so that PCRs are
  never further apart than ISO 13818-1's 100 ms while there is media.
- A timed ID3 metadata stream declared after video and audio (stream_type 0x15 with the
  'ID3 ' metadata_descriptor, PES stream_id 0xBD), whether or not it carries a tag: the
  program's streams never change from one segment to the next (M6), and a player finds the
  stream before the first product card. Tags are muxed at their PTS, among the frames
  (mediacore/packager/metadata.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import mediacore.packager.ts_packets as pure_ts_packets
from mediacore.model.aac import AacConfig, adts_header, parse_asc
from mediacore.model.compiled import pick_module
from mediacore.model.h264 import AvcConfig, avcc_to_annexb, parse_avcc
from mediacore.model.media import Frame, Kind
from mediacore.model.timebase import rescale

_packets, TS_COMPILED = pick_module("cython_ext.ts_packets", pure_ts_packets)
TS_PACKET = pure_ts_packets.TS_PACKET
TS_PAYLOAD = pure_ts_packets.TS_PAYLOAD

PAT_PID = 0x0000
PMT_PID = 0x1000
PIDS = {Kind.VIDEO: 0x0100, Kind.AUDIO: 0x0101}
ID3_PID = 0x0102
PROGRAM = 1
TRANSPORT_STREAM_ID = 1
CLOCK = 90000  # PES timestamps and PCR base tick at 90 kHz
TIMESTAMP_MASK = (1 << 33) - 1
PCR_INTERVAL_90K = 3600
"""Most time (40 ms at 90 kHz) after a PCR before the next PES brings one, on a PCR-only
packet if that PES is not on the PCR PID (ISO 13818-1 2.7.2 allows at most 100 ms)."""
VERSION_MASK = 0x1F

STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_AAC_ADTS = 0x0F
STREAM_TYPE_METADATA = 0x15
STREAM_ID_VIDEO = 0xE0
STREAM_ID_AUDIO = 0xC0
STREAM_ID_PRIVATE_1 = 0xBD
ID3_DESCRIPTOR = bytes.fromhex("260dffff49443320ff4944332000" + "0f")
"""metadata_descriptor (tag 0x26): application format 0xFFFF + 'ID3 ', format 0xFF + 'ID3 ',
service 0, no locator record, carried in PES (ISO 13818-1 2.6.60; Apple's timed metadata)."""

MAX_PES_LENGTH = 0xFFFF
"""PES_packet_length is 16 bits; video writes 0 (unbounded), as 2.4.3.7 allows for video."""


def _crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 of a PSI section (polynomial 0x04C11DB7, no reflection, no final xor)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _section(table_id: int, table_id_extension: int, body: bytes, version: int = 0) -> bytes:
    """A long-form PSI section (current) with its CRC, behind a pointer_field 0 and padded
    with 0xFF to one packet's payload."""
    length = 5 + len(body) + 4  # extension .. last_section_number, body, CRC
    section = (
        bytes((table_id, 0xB0 | (length >> 8), length & 0xFF))
        + table_id_extension.to_bytes(2, "big")
        + bytes((0xC1 | (version & VERSION_MASK) << 1, 0x00, 0x00))
        + body
    )
    section += _crc32_mpeg2(section).to_bytes(4, "big")
    payload = b"\x00" + section
    if len(payload) > TS_PAYLOAD:
        raise ValueError("PSI section longer than one packet")
    return payload + b"\xff" * (TS_PAYLOAD - len(payload))


def _pid_field(pid: int) -> bytes:
    """A 13-bit PID behind 3 reserved bits, as PSI tables write it."""
    return bytes((0xE0 | (pid >> 8), pid & 0xFF))


def _elementary(stream_type: int, pid: int, descriptors: bytes = b"") -> bytes:
    size = len(descriptors)
    return bytes((stream_type,)) + _pid_field(pid) + bytes((0xF0 | (size >> 8), size & 0xFF)) + descriptors


@lru_cache(maxsize=8)
def _psi(kinds: tuple[Kind, ...], version: int = 0) -> tuple[bytes, bytes]:
    """(PAT payload, PMT payload) of a program of `kinds` (video before audio) and ID3; the
    PCR rides on the first of them."""
    pat = _section(0x00, TRANSPORT_STREAM_ID, PROGRAM.to_bytes(2, "big") + _pid_field(PMT_PID))
    pcr_pid = PIDS[kinds[0]] if kinds else ID3_PID
    streams = b"".join(
        _elementary(STREAM_TYPE_H264 if kind is Kind.VIDEO else STREAM_TYPE_AAC_ADTS, PIDS[kind]) for kind in kinds
    ) + _elementary(STREAM_TYPE_METADATA, ID3_PID, ID3_DESCRIPTOR)
    pmt = _section(0x02, PROGRAM, _pid_field(pcr_pid) + b"\xf0\x00" + streams, version)  # no program descriptors
    return pat, pmt


def _timestamp(marker: int, ts: int) -> bytes:
    """A 5-byte PES PTS or DTS field: 4-bit marker, 33 bits split 3/15/15 with marker bits."""
    ts &= TIMESTAMP_MASK
    return bytes(
        (
            (marker << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def pes_header(stream_id: int, payload_size: int, pts: int, dts: int | None = None, aligned: bool = False) -> bytes:
    """A PES header with PTS, and DTS when given and different from the PTS."""
    if dts is not None and dts != pts:
        flags, fields = 0xC0, _timestamp(3, pts) + _timestamp(1, dts)
    else:
        flags, fields = 0x80, _timestamp(2, pts)
    length = 3 + len(fields) + payload_size
    if stream_id == STREAM_ID_VIDEO or length > MAX_PES_LENGTH:
        length = 0
    return (
        bytes((0, 0, 1, stream_id, length >> 8, length & 0xFF, 0x84 if aligned else 0x80, flags, len(fields))) + fields
    )


@lru_cache(maxsize=64)
def _avc(config: bytes) -> AvcConfig:
    return parse_avcc(config)


@lru_cache(maxsize=64)
def _asc(config: bytes) -> AacConfig:
    return parse_asc(config)


class TsMuxer:
    """The MPEG-TS muxer of one stream's segments; it keeps the continuity counters (E2) and
    the program's kinds (one PMT for the stream's life)."""

    def __init__(self) -> None:
        self.counters: dict[int, int] = {}
        self.kinds: tuple[Kind, ...] = ()
        self.version = 0

    def mux(self, frames: Sequence[Frame], metadata: Sequence[tuple[int, bytes]] = ()) -> memoryview:
        """One segment of `frames` (in arrival order), with the ID3 tags of `metadata` ((90 kHz
        PTS, tag) pairs) on the timed metadata stream, each before the first frame at or past
        its PTS. The segment is a read-only view of the one buffer it was written into: no
        copy of it is made to turn it into bytes."""
        present = {f.track.kind for f in frames}
        kinds = tuple(k for k in (Kind.VIDEO, Kind.AUDIO) if k in present or k in self.kinds)
        if kinds != self.kinds:
            if self.kinds:
                self.version = (self.version + 1) & VERSION_MASK
            self.kinds = kinds
        pcr_kind = kinds[0] if kinds else None
        pcr_pid = PIDS[pcr_kind] if pcr_kind is not None else ID3_PID
        # (pid, PES, PCR or -1, random access) for every PES of the segment, in order; an
        # empty PES is a PCR-only packet
        units: list[tuple[int, bytes, int, bool]] = []
        last_pcr: int | None = None
        tags = sorted(metadata, key=lambda m: m[0])
        next_tag = 0
        for frame in frames:
            track = frame.track
            timebase = track.timebase
            pts = rescale(frame.pts, timebase, CLOCK)
            dts = rescale(frame.dts, timebase, CLOCK) if frame.dts != frame.pts else pts
            while next_tag < len(tags) and tags[next_tag][0] <= dts:
                units.append(self._id3(*tags[next_tag]))
                next_tag += 1
            pcr = -1
            if track.kind is pcr_kind:
                pcr, last_pcr = dts & TIMESTAMP_MASK, dts
            elif last_pcr is None or dts - last_pcr >= PCR_INTERVAL_90K:
                units.append((pcr_pid, b"", dts & TIMESTAMP_MASK, False))
                last_pcr = dts
            if track.kind is Kind.VIDEO:
                data = avcc_to_annexb(frame.data, _avc(track.config), frame.keyframe)
                header = pes_header(STREAM_ID_VIDEO, len(data), pts, dts)
                units.append((PIDS[Kind.VIDEO], header + data, pcr, frame.keyframe))
            else:
                adts = adts_header(_asc(track.config), len(frame.data))
                header = pes_header(STREAM_ID_AUDIO, len(adts) + len(frame.data), pts)
                units.append((PIDS[Kind.AUDIO], header + adts + frame.data, pcr, True))
        units.extend(self._id3(*tag) for tag in tags[next_tag:])
        return self._packets(kinds, units)

    @staticmethod
    def _id3(pts: int, tag: bytes) -> tuple[int, bytes, int, bool]:
        return ID3_PID, pes_header(STREAM_ID_PRIVATE_1, len(tag), pts, aligned=True) + tag, -1, True

    def _packets(self, kinds: tuple[Kind, ...], units: list[tuple[int, bytes, int, bool]]) -> memoryview:
        count = 2 + sum(_packets.pes_packets(len(pes), pcr, rai) for _, pes, pcr, rai in units)
        size = count * TS_PACKET
        out = bytearray(size)
        counters = self.counters
        pat, pmt = _psi(kinds, self.version)
        at = 0
        for pid, payload in ((PAT_PID, pat), (PMT_PID, pmt)):
            counter = counters.get(pid, 0)
            out[at : at + 4] = bytes((pure_ts_packets.SYNC_BYTE, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | counter))
            out[at + 4 : at + TS_PACKET] = payload
            counters[pid] = (counter + 1) & 0x0F
            at += TS_PACKET
        write_pes = _packets.write_pes
        for pid, pes, pcr, rai in units:
            counter = counters.get(pid, 0)
            end = write_pes(out, at, pes, pid, counter, pcr, rai)
            if pes:  # a PCR-only packet (empty PES) carries no payload: the counter stays
                counters[pid] = (counter + (end - at) // TS_PACKET) & 0x0F
            at = end
        if at != size:
            raise AssertionError(f"TS writer filled {at} of {size} bytes")
        return memoryview(out).toreadonly()


def probe_first_pids(data: bytes, count: int = 2) -> list[int]:
    return [((data[i + 1] & 0x1F) << 8) | data[i + 2] for i in range(0, min(len(data), count * TS_PACKET), TS_PACKET)]

"""The MPEG-TS packet loop: one PES cut into 188-byte transport packets (ISO 13818-1 2.4.3).

A 2 s segment of a 2 Mb/s stream is about 3,000 packets, so this loop is written to be
compiled: cython_ext/ts_packets.py links here and its .pxd types the locals, and the plain
module is the pure twin that the tests hold equal to it (mediacore/model/compiled.py).

The first packet of a PES carries, in its adaptation field, the random access indicator of a
keyframe and the PCR when one is given; the last one is padded with adaptation-field stuffing
so that every packet is whole. Nothing else in a packet varies, so the writer needs only the
PID, the continuity counter to start from and the PES bytes.
"""

TS_PACKET = 188
TS_PAYLOAD = 184  # a packet less its 4-byte header
SYNC_BYTE = 0x47
PCR_FIELD = 6  # 33-bit base, 6 reserved bits, 9-bit extension
AF_RANDOM_ACCESS = 0x40
AF_PCR = 0x10


def first_adaptation(pcr_90k: int, random_access: bool) -> int:
    """Bytes of adaptation field (length byte included) the first packet of a PES needs for
    its PCR and random access flag; 0 for none."""
    if pcr_90k >= 0:
        return 2 + PCR_FIELD
    return 2 if random_access else 0


def pes_packets(size: int, pcr_90k: int, random_access: bool) -> int:
    """Transport packets a PES of `size` bytes takes; stuffing never adds one."""
    return (size + first_adaptation(pcr_90k, random_access) + TS_PAYLOAD - 1) // TS_PAYLOAD


def write_pes(out: bytearray, at: int, pes: bytes, pid: int, counter: int, pcr_90k: int, random_access: bool) -> int:
    """Write the packets of `pes` into `out` from offset `at` (the caller sized `out` with
    pes_packets); returns the offset after them. Continuity counters run on from `counter`
    (E2): the PID's next counter is (counter + packets) mod 16. `pcr_90k` < 0: no PCR.

    An empty `pes` with a PCR is one packet of adaptation field alone, carrying the PCR; having
    no payload, it repeats the PID's last counter (counter - 1) and the next stays `counter`."""
    size = len(pes)
    if at < 0 or at + pes_packets(size, pcr_90k, random_access) * TS_PACKET > len(out):
        raise ValueError(f"{size} bytes of PES do not fit in {len(out)} bytes from offset {at}")
    dst = memoryview(out)
    src = memoryview(pes)
    pos = 0
    first = True
    pcr_only = size == 0 and pcr_90k >= 0
    while pos < size or (first and pcr_only):
        left = size - pos
        adaptation = first_adaptation(pcr_90k, random_access) if first else 0
        if left < TS_PAYLOAD - adaptation:  # the last packet: stuffing fills what the payload does not
            adaptation = TS_PAYLOAD - left
        take = TS_PAYLOAD - adaptation
        dst[at] = SYNC_BYTE
        dst[at + 1] = (0x40 if first and take else 0) | (pid >> 8)
        dst[at + 2] = pid & 0xFF
        if take:
            dst[at + 3] = (0x30 if adaptation else 0x10) | (counter & 0x0F)
            counter += 1
        else:
            dst[at + 3] = 0x20 | ((counter - 1) & 0x0F)
        head = at + 4
        if adaptation:
            dst[head] = adaptation - 1  # adaptation_field_length: the bytes after this one
            if adaptation > 1:
                flags = 0
                filled = head + 2
                if first:
                    if random_access:
                        flags |= AF_RANDOM_ACCESS
                    if pcr_90k >= 0:
                        flags |= AF_PCR
                        base = pcr_90k & 0x1FFFFFFFF
                        dst[filled] = (base >> 25) & 0xFF
                        dst[filled + 1] = (base >> 17) & 0xFF
                        dst[filled + 2] = (base >> 9) & 0xFF
                        dst[filled + 3] = (base >> 1) & 0xFF
                        dst[filled + 4] = ((base & 1) << 7) | 0x7E  # reserved bits; extension 0
                        dst[filled + 5] = 0
                        filled += PCR_FIELD
                dst[head + 1] = flags
                while filled < head + adaptation:
                    dst[filled] = 0xFF
                    filled += 1
        dst[head + adaptation : at + TS_PACKET] = src[pos : pos + take]
        pos += take
        at += TS_PACKET
        first = False
    return at

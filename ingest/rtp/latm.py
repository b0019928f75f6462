"""MPEG-4 audio over RTP as LATM (RFC 6416, which replaces RFC 3016; encoding name
MP4A-LATM): the StreamMuxConfig the SDP carries in `config=` (with `cpresent=0`), and
AudioMuxElements -> raw AAC frames, the same frames the MPEG4-GENERIC path hands on.

ISO/IEC 14496-3 1.7.3 defines the syntax. What is taken is what RTP senders use: one
program with one layer (`numProgram` = `numLayer` = 0), all streams on the same time
framing, `frameLengthType` 0 (each frame's length in a PayloadLengthInfo of bytes, 255
meaning "add the next byte"), `audioMuxVersion` 0 or 1 with `audioMuxVersionA` 0, any
`numSubFrames`, other data of a declared length. Anything else is refused with an error
naming the field, when the SDP is announced.

An AudioMuxElement may be fragmented over several RTP packets of one timestamp, the last
with the marker bit set; one packet may also hold several whole elements (RFC 6416 6.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .access_unit import AccessUnit
from .errors import RtpError
from .packet import RtpPacket

MAX_MUX_CONFIG_BYTES = 64
"""Longest StreamMuxConfig taken from the SDP: one program and one layer need under 20
bytes (an AudioSpecificConfig with SBR/PS signalling is at most 8); the bound keeps the
bit reader's integer small."""
MAX_ELEMENT_BYTES = 65536
"""Most bytes buffered for one AudioMuxElement across its RTP fragments: eight 8-channel
AAC frames at their largest (6144 bytes each); real senders put one frame of a few
hundred bytes in an element."""
MAX_AAC_FRAME_BYTES = 6144
"""Largest AAC frame a PayloadLengthInfo may declare: 6144 bits per channel per frame
(ISO/IEC 14496-3 4.5.3.1) for the 8 channels a channel configuration can name."""
SYNC_EXTENSION = 0x2B7
"""syncExtensionType announcing SBR signalling appended to an AudioSpecificConfig."""
SAMPLING_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)

# Audio object types whose AudioSpecificConfig is a GASpecificConfig (ISO/IEC 14496-3 1.6.2.1).
_GA_OBJECT_TYPES = frozenset((1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23))
_ER_OBJECT_TYPES = frozenset((17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 39))


class _Bits:
    """Big-endian bit reader over a short byte string; reading past `end` raises RtpError
    naming the field."""

    __slots__ = ("_value", "_total", "pos", "end")

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._total = len(data) * 8
        self.pos = 0
        self.end = self._total

    @property
    def left(self) -> int:
        return self.end - self.pos

    def peek(self, n: int) -> int:
        return (self._value >> (self._total - self.pos - n)) & ((1 << n) - 1)

    def read(self, n: int, what: str) -> int:
        if n > self.left:
            raise RtpError(f"MP4A-LATM StreamMuxConfig ends inside {what}")
        value = self.peek(n)
        self.pos += n
        return value

    def span(self, start: int, stop: int) -> bytes:
        """Bits [start, stop) as bytes, zero bits padding the last byte."""
        n = stop - start
        value = (self._value >> (self._total - stop)) & ((1 << n) - 1)
        pad = -n % 8
        return (value << pad).to_bytes((n + pad) // 8, "big")


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """The fields of an AudioSpecificConfig the depacketizer and the checks need."""

    object_type: int
    sample_rate: int  # the core coder's rate (samplingFrequencyIndex or its explicit value)
    channels: int
    frame_samples: int  # 1024, or 960 when frameLengthFlag is set


def _object_type(bits: _Bits) -> int:
    kind = bits.read(5, "audioObjectType")
    return 32 + bits.read(6, "audioObjectTypeExt") if kind == 31 else kind


def _sampling_rate(bits: _Bits, what: str) -> int:
    index = bits.read(4, what)
    if index == 15:
        rate = bits.read(24, what)
    elif index < len(SAMPLING_RATES):
        rate = SAMPLING_RATES[index]
    else:
        raise RtpError(f"MP4A-LATM AudioSpecificConfig has the reserved {what} {index}")
    if rate == 0:
        raise RtpError(f"MP4A-LATM AudioSpecificConfig has a {what} of 0 Hz")
    return rate


def read_audio_specific_config(bits: _Bits) -> AudioConfig:
    """AudioSpecificConfig() (ISO/IEC 14496-3 1.6.2.1) for the GA object types (AAC Main,
    LC, SSR, LTP, scalable, TwinVQ and their ER forms), explicit or backward-compatible
    SBR/PS signalling included; reads up to `bits.end`, which bounds the sync extension
    search as bits_to_decode() does."""
    object_type = _object_type(bits)
    sample_rate = _sampling_rate(bits, "samplingFrequencyIndex")
    channels = bits.read(4, "channelConfiguration")
    extension_type = 0
    if object_type in (5, 29):  # explicit SBR (HE-AAC) / PS (HE-AAC v2): the core follows
        extension_type = 5
        _sampling_rate(bits, "extensionSamplingFrequencyIndex")
        object_type = _object_type(bits)
        if object_type == 22:
            bits.read(4, "extensionChannelConfiguration")
    if object_type not in _GA_OBJECT_TYPES:
        raise RtpError(f"MP4A-LATM audio object type {object_type} is not AAC")
    if channels == 0:
        raise RtpError("MP4A-LATM AudioSpecificConfig with a program_config_element is not supported")
    # GASpecificConfig()
    frame_length_flag = bits.read(1, "frameLengthFlag")
    if bits.read(1, "dependsOnCoreCoder"):
        bits.read(14, "coreCoderDelay")
    extension_flag = bits.read(1, "extensionFlag")
    if object_type in (6, 20):
        bits.read(3, "layerNr")
    if extension_flag:
        if object_type == 22:
            bits.read(16, "numOfSubFrame and layer_length")
        if object_type in (17, 19, 20, 23):
            bits.read(3, "aac*ResilienceFlags")
        bits.read(1, "extensionFlag3")
    if object_type in _ER_OBJECT_TYPES:
        ep_config = bits.read(2, "epConfig")
        if ep_config in (2, 3):
            raise RtpError(f"MP4A-LATM epConfig {ep_config} (error protection) is not supported")
    if extension_type != 5 and bits.left >= 16 and bits.peek(11) == SYNC_EXTENSION:
        bits.read(11, "syncExtensionType")
        if _object_type(bits) == 5 and bits.read(1, "sbrPresentFlag"):
            _sampling_rate(bits, "extensionSamplingFrequencyIndex")
            if bits.left >= 12 and bits.peek(11) == 0x548:
                bits.read(12, "syncExtensionType and psPresentFlag")
    return AudioConfig(object_type, sample_rate, channels, 960 if frame_length_flag else 1024)


@dataclass(frozen=True, slots=True)
class StreamMuxConfig:
    audio_mux_version: int
    sub_frames: int  # AAC frames per AudioMuxElement (numSubFrames + 1)
    asc: bytes  # the AudioSpecificConfig, zero bits padding its last byte
    audio: AudioConfig
    other_data_bits: int  # other data closing each AudioMuxElement (0: none)


def _latm_value(bits: _Bits, what: str) -> int:
    """LatmGetValue(): a 2-bit count of further bytes, then 1 to 4 bytes of value."""
    count = bits.read(2, what) + 1
    return bits.read(8 * count, what)


def parse_stream_mux_config(config: bytes) -> StreamMuxConfig:
    """StreamMuxConfig() (ISO/IEC 14496-3 1.7.3.1) from the SDP's `config=` bytes.

    GStreamer's rtpmp4apay writes the fields up to the AudioSpecificConfig (the encoder's
    codec data, its padding included) and stops; FFmpeg's LATM reader reads nothing past
    it either. So when fewer bits than frameLengthType, latmBufferFullness,
    otherDataPresent and crcCheckPresent need are left and they are all zero, those fields
    take their usual values (0, unused, no other data, no CRC)."""
    if not config:
        raise RtpError("MP4A-LATM media without config= (cpresent=0 needs the StreamMuxConfig in the SDP)")
    if len(config) > MAX_MUX_CONFIG_BYTES:
        raise RtpError(f"MP4A-LATM StreamMuxConfig of {len(config)} bytes exceeds {MAX_MUX_CONFIG_BYTES}")
    bits = _Bits(config)
    version = bits.read(1, "audioMuxVersion")
    if version == 1 and bits.read(1, "audioMuxVersionA"):
        raise RtpError("MP4A-LATM audioMuxVersionA 1 is reserved")
    if version == 1:
        _latm_value(bits, "taraBufferFullness")
    if not bits.read(1, "allStreamsSameTimeFraming"):
        raise RtpError("MP4A-LATM allStreamsSameTimeFraming 0 is not supported")
    sub_frames = bits.read(6, "numSubFrames") + 1
    if bits.read(4, "numProgram"):
        raise RtpError("MP4A-LATM with more than one program is not supported")
    if bits.read(3, "numLayer"):
        raise RtpError("MP4A-LATM with more than one layer is not supported")
    if version == 0:
        start = bits.pos
        audio = read_audio_specific_config(bits)
        asc = bits.span(start, bits.pos)
    else:
        length = _latm_value(bits, "ascLen")
        if length > bits.left:
            raise RtpError(f"MP4A-LATM ascLen of {length} bits runs past the StreamMuxConfig")
        start, outer_end = bits.pos, bits.end
        bits.end = start + length
        audio = read_audio_specific_config(bits)
        asc = bits.span(start, bits.pos)
        bits.pos, bits.end = start + length, outer_end  # fillBits
    other_data_bits = 0
    if bits.left < 13 and bits.peek(bits.left) == 0:
        return StreamMuxConfig(version, sub_frames, asc, audio, 0)  # rtpmp4apay's short form
    frame_length_type = bits.read(3, "frameLengthType")
    if frame_length_type != 0:
        raise RtpError(f"MP4A-LATM frameLengthType {frame_length_type} is not supported (AAC needs 0)")
    bits.read(8, "latmBufferFullness")
    if bits.read(1, "otherDataPresent"):
        if version == 1:
            other_data_bits = _latm_value(bits, "otherDataLenBits")
        else:
            while True:
                escape = bits.read(1, "otherDataLenEsc")
                other_data_bits = other_data_bits * 256 + bits.read(8, "otherDataLenTmp")
                if not escape:
                    break
        if other_data_bits > 8 * MAX_ELEMENT_BYTES:
            raise RtpError(f"MP4A-LATM otherDataLenBits of {other_data_bits} exceeds {8 * MAX_ELEMENT_BYTES}")
    if bits.read(1, "crcCheckPresent"):
        bits.read(8, "crcCheckSum")
    return StreamMuxConfig(version, sub_frames, asc, audio, other_data_bits)


def parse_audio_mux_elements(mux: StreamMuxConfig, data: bytes, timestamp: int, frame_ticks: int) -> list[AccessUnit]:
    """Whole AudioMuxElements (cpresent=0: no StreamMuxConfig in band), back to back, to
    their AAC frames; the n-th frame is stamped `timestamp + n * frame_ticks`. Every length
    is checked before it is used, and the elements must fill `data` exactly."""
    out: list[AccessUnit] = []
    pos = 0
    size = len(data)
    other_bytes = (mux.other_data_bits + 7) // 8
    n = 0
    while pos < size:
        for _ in range(mux.sub_frames):
            length = 0
            while True:  # PayloadLengthInfo: bytes summed while they are 255
                if pos >= size:
                    raise RtpError("MP4A-LATM AudioMuxElement ends inside a PayloadLengthInfo")
                byte = data[pos]
                pos += 1
                length += byte
                if length > MAX_AAC_FRAME_BYTES:
                    raise RtpError(f"MP4A-LATM frame length exceeds {MAX_AAC_FRAME_BYTES} bytes")
                if byte != 255:
                    break
            if pos + length > size:
                raise RtpError(f"MP4A-LATM frame of {length} bytes runs {pos + length - size} bytes past the element")
            if length:
                frame = bytes(data[pos : pos + length])
                out.append(AccessUnit((timestamp + n * frame_ticks) & 0xFFFFFFFF, frame, True))
            pos += length
            n += 1
        pos += other_bytes
        if pos > size:
            raise RtpError("MP4A-LATM AudioMuxElement ends inside its other data")
    return out


class LatmDepacketizer:
    """RFC 6416 MP4A-LATM with cpresent=0: fragments of one AudioMuxElement (one RTP
    timestamp) are joined until the marker bit, then cut into AAC frames.

    Loss: the element a lost packet belonged to is dropped whole (`damaged_units`), and its
    remaining fragments (same timestamp) with it. A packet after a gap may also continue an
    element whose first fragment and timestamp change were both lost; such an element is
    refused by the exact-length check and counted as damaged rather than as bad input."""

    def __init__(self, mux: StreamMuxConfig, frame_ticks: int | None = None) -> None:
        """`frame_ticks`: RTP clock ticks per AAC frame (default: the frame's samples, the
        RTP clock running at the sampling rate as RFC 6416 recommends)."""
        self.mux = mux
        self.frame_ticks = frame_ticks if frame_ticks is not None else mux.audio.frame_samples
        self.damaged_units = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._timestamp = 0
        self._suspect = False  # the element in progress began right after a gap
        self._gap = False  # a loss came since the last packet
        self._skip: int | None = None  # timestamp of a damaged element whose fragments are dropped

    def lost(self) -> None:
        self._gap = True
        if self._parts:
            self.damaged_units += 1
            self._skip = self._timestamp
            self._reset()

    def _reset(self) -> None:
        self._parts = []
        self._size = 0

    def push(self, packet: RtpPacket) -> list[AccessUnit]:
        timestamp = packet.timestamp
        if self._skip is not None:
            if timestamp == self._skip:
                if packet.marker:
                    self._skip = None
                return []
            self._skip = None
        out: list[AccessUnit] = []
        if self._parts and timestamp != self._timestamp:
            out = self._complete(marked=False)  # the element ended without its marker
        if not self._parts:
            self._timestamp = timestamp
            self._suspect = self._gap
        self._gap = False
        payload = packet.payload
        if self._size + len(payload) > MAX_ELEMENT_BYTES:
            self._reset()
            if not packet.marker:
                self._skip = timestamp
            raise RtpError(f"MP4A-LATM AudioMuxElement exceeds {MAX_ELEMENT_BYTES} bytes")
        self._parts.append(payload)
        self._size += len(payload)
        if packet.marker:
            out += self._complete(marked=True)
        return out

    def _complete(self, marked: bool) -> list[AccessUnit]:
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        suspect = self._suspect or not marked
        self._reset()
        try:
            return parse_audio_mux_elements(self.mux, data, self._timestamp, self.frame_ticks)
        except RtpError:
            if suspect:
                self.damaged_units += 1
                return []
            raise

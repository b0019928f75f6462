"""AAC helpers: AudioSpecificConfig fields and the ADTS header MPEG-TS carries."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
SAMPLES_PER_FRAME = 1024


class AacError(ValueError):
    """Malformed or unsupported AAC configuration."""


@dataclass(frozen=True, slots=True)
class AacConfig:
    object_type: int
    sample_rate: int
    sample_rate_index: int
    channels: int

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


def parse_asc(asc: bytes) -> AacConfig:
    """Parse the fields of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) that ADTS needs."""
    if len(asc) < 2:
        raise AacError(f"AudioSpecificConfig of {len(asc)} bytes is too short")
    bits = int.from_bytes(asc[:5].ljust(5, b"\x00"), "big")
    object_type = bits >> 35
    pos = 35
    if object_type == 31:
        object_type = 32 + ((bits >> 29) & 0x3F)
        pos = 29
    index = (bits >> (pos - 4)) & 0x0F
    pos -= 4
    if index == 15:
        if len(asc) < 5:
            raise AacError("AudioSpecificConfig with explicit rate is truncated")
        rate = (bits >> (pos - 24)) & 0xFFFFFF
        pos -= 24
        index = SAMPLE_RATES.index(rate) if rate in SAMPLE_RATES else 15
    elif index < len(SAMPLE_RATES):
        rate = SAMPLE_RATES[index]
    else:
        raise AacError(f"reserved sampling frequency index {index}")
    channels = (bits >> (pos - 4)) & 0x0F
    if object_type not in (1, 2, 3, 4, 5, 29):
        raise AacError(f"AAC object type {object_type} is not supported")
    if rate <= 0:
        raise AacError("AAC sample rate is zero")
    return AacConfig(object_type, rate, index, channels)


def adts_header(config: AacConfig, payload_length: int) -> bytes:
    """A 7-byte ADTS header (no CRC) for one raw AAC frame."""
    if config.sample_rate_index > 12:
        raise AacError(f"sample rate {config.sample_rate} cannot be expressed in ADTS")
    length = payload_length + 7
    if length > 0x1FFF:
        raise AacError(f"AAC frame of {payload_length} bytes is too long for ADTS")
    profile = min(config.object_type, 4) - 1  # HE-AAC is signalled implicitly as LC
    ch = config.channels
    return bytes(
        (
            0xFF,
            0xF1,
            (profile << 6) | (config.sample_rate_index << 2) | (ch >> 2),
            ((ch & 3) << 6) | (length >> 11),
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,
            0xFC,
        )
    )

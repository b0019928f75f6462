"""SDP (RFC 8866) for RTSP ANNOUNCE and raw RTP inputs: the media sections mediacore
ingests, with clear errors for what it does not. Sizes are bounded before parsing."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from mediacore.model.aac import AacError, parse_asc

from .errors import RtpError
from .latm import StreamMuxConfig, parse_stream_mux_config

MAX_SDP_BYTES = 16384
MAX_MEDIA = 8


@dataclass(slots=True)
class MediaDescription:
    kind: str  # "video" or "audio"
    payload_type: int
    encoding: str  # upper case: H264, MPEG4-GENERIC, MP4A-LATM, OPUS
    clock_rate: int
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    control: str = ""
    port: int = 0  # from the m= line: where a raw RTP input listens
    rtcp_port: int = 0  # a=rtcp (RFC 3605); 0 means port + 1
    rtx_payload_type: int | None = None  # RFC 4588 retransmissions of this media (`apt=` names it)
    rtx_time: float = 0.0  # seconds the sender keeps packets for retransmission (`rtx-time`); 0: not said

    @property
    def sprop_parameter_sets(self) -> list[bytes]:
        sets = []
        for item in self.fmtp.get("sprop-parameter-sets", "").split(","):
            if item:
                try:
                    sets.append(base64.b64decode(item, validate=True))
                except (binascii.Error, ValueError) as e:
                    raise RtpError(f"sprop-parameter-sets is not base64: {e}") from e
        return sets

    @property
    def aac_config(self) -> bytes:
        try:
            return bytes.fromhex(self.fmtp.get("config", ""))
        except ValueError as e:
            raise RtpError("AAC config in fmtp is not hex") from e

    @property
    def stream_mux_config(self) -> StreamMuxConfig:
        """MP4A-LATM (RFC 6416): the StreamMuxConfig in `config=`, which `cpresent=0` says
        is there and not in band (RFC 3016's default, cpresent=1, is refused)."""
        cpresent = self.fmtp.get("cpresent", "1")
        if cpresent != "0":
            raise RtpError(
                f"MP4A-LATM with cpresent={cpresent} (StreamMuxConfig in band) is not supported; "
                "send cpresent=0 with config="
            )
        return parse_stream_mux_config(self.aac_config)


@dataclass(slots=True)
class SessionDescription:
    media: list[MediaDescription] = field(default_factory=list)


def parse_sdp(text: str) -> SessionDescription:
    if len(text) > MAX_SDP_BYTES:
        raise RtpError(f"SDP of {len(text)} bytes exceeds the limit of {MAX_SDP_BYTES}")
    sdp = SessionDescription()
    current: MediaDescription | None = None
    rtpmaps: dict[int, tuple[str, int, int]] = {}
    rtx: dict[tuple[int, int], MediaDescription] = {}  # (media index, RTX payload type) -> its media
    rtx_params: dict[tuple[int, int], dict[str, str]] = {}  # (media index, payload type) -> its fmtp
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise RtpError(f"SDP media line {value!r} is incomplete")
            if len(sdp.media) >= MAX_MEDIA:
                raise RtpError(f"SDP declares more than {MAX_MEDIA} media sections")
            try:
                payload_type = int(parts[3])
            except ValueError as e:
                raise RtpError(f"SDP payload type {parts[3]!r} is not a number") from e
            if not 0 <= payload_type <= 127:
                raise RtpError(f"SDP payload type {payload_type} is out of range")
            try:
                port = int(parts[1].split("/")[0])
            except ValueError as e:
                raise RtpError(f"SDP media port {parts[1]!r} is not a number") from e
            if not 0 <= port <= 65535:
                raise RtpError(f"SDP media port {port} is out of range")
            current = MediaDescription(parts[0], payload_type, "", 0, port=port)
            sdp.media.append(current)
        elif kind == "a" and current is not None:
            name, _, attr = value.partition(":")
            if name == "rtpmap":
                pt_text, _, encoding = attr.partition(" ")
                enc_parts = encoding.split("/")
                try:
                    pt = int(pt_text)
                    rate = int(enc_parts[1])
                    channels = int(enc_parts[2]) if len(enc_parts) > 2 else 1
                except (ValueError, IndexError) as e:
                    raise RtpError(f"SDP rtpmap {attr!r} is malformed") from e
                if not 1000 <= rate <= 192000 or not 1 <= channels <= 8:
                    raise RtpError(f"SDP rtpmap {attr!r} has an absurd clock rate or channel count")
                rtpmaps[pt] = (enc_parts[0].upper(), rate, channels)
                if pt == current.payload_type:
                    current.encoding, current.clock_rate, current.channels = rtpmaps[pt]
                elif rtpmaps[pt][0] == "RTX":
                    rtx[len(sdp.media) - 1, pt] = current
            elif name == "fmtp":
                pt_text, _, params = attr.partition(" ")
                target = current.fmtp
                if pt_text.strip().isdigit() and int(pt_text) != current.payload_type:
                    target = rtx_params.setdefault((len(sdp.media) - 1, int(pt_text)), {})  # another format's
                for item in params.split(";"):
                    key, _, val = item.strip().partition("=")
                    if key:
                        target[key.lower()] = val.strip()
            elif name == "control":
                current.control = attr
            elif name == "rtcp":
                try:
                    current.rtcp_port = int(attr.split()[0])
                except (ValueError, IndexError) as e:
                    raise RtpError(f"SDP rtcp attribute {attr!r} is malformed") from e
                if not 0 < current.rtcp_port <= 65535:
                    raise RtpError(f"SDP rtcp port {current.rtcp_port} is out of range")
    for media in sdp.media:
        if not media.encoding:
            raise RtpError(f"SDP {media.kind} payload type {media.payload_type} has no rtpmap")
    for (index, pt), media in rtx.items():
        _rtx(media, pt, rtx_params.get((index, pt), {}))
    return sdp


MAX_RTX_TIME = 10.0
"""Longest `rtx-time` taken from an SDP, seconds: far beyond any playout delay (which caps
how long a retransmission is waited for), so a larger value changes nothing."""


def _rtx(media: MediaDescription, pt: int, params: dict[str, str]) -> None:
    """RFC 4588 section 8.6: `a=rtpmap:PT rtx/RATE` with `a=fmtp:PT apt=ORIGINAL;rtx-time=MS`
    names the payload type of the retransmissions of ORIGINAL (session multiplexing: same
    port, another SSRC). Retransmissions of a payload type this media does not carry are
    ignored, as are its other payload types."""
    try:
        apt = int(params.get("apt", ""))
    except ValueError as e:
        raise RtpError(f"SDP rtx payload type {pt} has no valid apt= (RFC 4588)") from e
    if apt != media.payload_type:
        return
    try:
        rtx_time = int(params.get("rtx-time", "0")) / 1000.0
    except ValueError as e:
        raise RtpError(f"SDP rtx-time {params.get('rtx-time')!r} is not a number of milliseconds") from e
    if rtx_time < 0:
        raise RtpError(f"SDP rtx-time {params.get('rtx-time')!r} is negative")
    media.rtx_payload_type = pt
    media.rtx_time = min(rtx_time, MAX_RTX_TIME)


SUPPORTED = {"video": ("H264",), "audio": ("MPEG4-GENERIC", "MP4A-LATM", "OPUS")}


def check_ingestible(sdp: SessionDescription) -> None:
    """What the hub can take: one H.264 video and/or one AAC (MPEG4-GENERIC or MP4A-LATM)
    or Opus audio media."""
    if not sdp.media:
        raise RtpError("the SDP has no media")
    seen: set[str] = set()
    for media in sdp.media:
        if media.encoding not in SUPPORTED.get(media.kind, ()):
            raise RtpError(f"{media.kind} codec {media.encoding} is not supported (H.264 video; AAC or Opus audio)")
        if media.kind in seen:
            raise RtpError(f"the SDP has more than one {media.kind} media")
        seen.add(media.kind)
        if media.encoding == "OPUS" and media.clock_rate != 48000:
            raise RtpError(f"Opus RTP clock rate must be 48000 (RFC 7587), the SDP says {media.clock_rate}")
        if media.encoding == "MP4A-LATM":
            check_latm(media)


def check_latm(media: MediaDescription) -> StreamMuxConfig:
    """An MP4A-LATM media the LATM depacketizer and the AAC packagers can take: its
    StreamMuxConfig parses, its AudioSpecificConfig is AAC with 1024-sample frames, and the
    RTP clock runs at the sampling rate (RFC 6416 7.3 recommends it; frames are stamped in
    RTP ticks and published in samples)."""
    mux = media.stream_mux_config
    try:
        asc = parse_asc(mux.asc)
    except AacError as e:
        raise RtpError(f"bad AAC config in the MP4A-LATM StreamMuxConfig: {e}") from e
    if mux.audio.frame_samples != 1024:
        raise RtpError(f"MP4A-LATM AAC frames of {mux.audio.frame_samples} samples are not supported (1024)")
    if media.clock_rate != asc.sample_rate:
        raise RtpError(
            f"MP4A-LATM RTP clock rate {media.clock_rate} differs from the AAC sampling rate {asc.sample_rate}"
        )
    return mux

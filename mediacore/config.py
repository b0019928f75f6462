"""Configuration: a TOML file plus command-line flags (flags win).

Every limit, port and duration lives here with its default and the reason for it; protocol
cores receive these objects and never hard-code a bound.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration file or a flag has an unknown key or a value of the wrong type."""


@dataclass(slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    rtmp_port: int = 1935
    rtsp_port: int = 8554
    http_port: int = 8080
    public_url: str = ""
    """Base URL printed for viewers (the watch page link); derived from host/port if empty."""


@dataclass(slots=True)
class RtmpConfig:
    max_chunk_size: int = 65536
    """Largest Set Chunk Size a peer may ask for; encoders use 128-65536."""
    max_message_size: int = 8 * 1024 * 1024
    """Largest message (one video frame) accepted: 8 MiB covers 4K keyframes at high bitrates."""
    max_chunk_streams: int = 64
    """Chunk stream ids one connection may keep partial state for; encoders use fewer than 10."""
    max_buffered_bytes: int = 16 * 1024 * 1024
    """Bytes of partially received messages held per connection across all chunk streams."""
    max_amf_depth: int = 32
    """Nesting depth of AMF objects; real commands nest 2-3 deep."""
    max_amf_string: int = 65536
    """Longest AMF long string or XML document accepted."""
    max_amf_items: int = 4096
    """Most properties or array elements in one AMF object, array or ECMA array."""
    max_stream_name: int = 128
    """Longest stream name; names appear in URLs and file names."""
    handshake_timeout: float = 10.0
    """Seconds for C0+C1+C2 to arrive; an idle socket that never handshakes is closed."""
    idle_timeout: float = 30.0
    """Seconds without any bytes from a connection before it is closed."""
    window_ack_size: int = 2_500_000
    """Acknowledgement window we announce (bytes); the same figure ffmpeg and nginx-rtmp use."""
    out_chunk_size: int = 4096
    """Chunk size for what we send; replies are small, 4096 keeps them in one chunk."""


@dataclass(slots=True)
class RtspConfig:
    udp_port_min: int = 30000
    """First server UDP port for RTP/RTCP pairs (RTP even, RTCP the next one)."""
    udp_port_max: int = 30999
    """Last server UDP port; 500 pairs, two per published track."""
    record_timeout: float = 10.0
    """Seconds a connection may take from connecting to RECORD before it is closed."""
    session_timeout: float = 30.0
    """Seconds without RTSP or RTP data before a publishing session is closed."""


@dataclass(slots=True)
class RtpInputConfig:
    stream: str = ""
    """Stream name the input publishes as (rtmp and RTSP publishers cannot take it)."""
    sdp: str = ""
    """Path of the SDP file describing the input: its m= ports are the UDP ports listened on
    (RTCP on the next port), its rtpmap/fmtp lines the codecs (what `ffmpeg -sdp_file` writes)."""


@dataclass(slots=True)
class RtpConfig:
    inputs: list[RtpInputConfig] = field(default_factory=list)
    """Raw RTP/UDP inputs, one [[rtp.inputs]] table each."""
    input_timeout: float = 10.0
    """Seconds without RTP on a raw input before its stream is unpublished (it republishes
    when packets come back)."""


@dataclass(slots=True)
class HlsConfig:
    segment_duration: float = 2.0
    """Target seconds per segment; a segment closes at the first keyframe after this."""
    window_segments: int = 8
    """Segments listed in the live playlist; never fewer than 6 (Apple A8.11) nor 3 x TD (W4)."""
    end_grace: float = 10.0
    """Seconds a stream waits for its publisher to return before EXT-X-ENDLIST is written."""
    ended_retention: float = 60.0
    """Seconds an ended stream's playlist stays served (W8) before the stream is forgotten."""
    queue_frames: int = 2048
    """Frames the packager may fall behind ingest before it drops (to the next keyframe)."""
    mux_threads: int = 2
    """Worker threads muxing segments with PyAV off the event loop."""


@dataclass(slots=True)
class LlHlsConfig:
    part_duration: float = 0.2
    """Nominal seconds per part. PART-TARGET is declared 10 % above it, so timestamp jitter
    never makes a part longer than PART-TARGET (L5) while full parts stay above 85 % of it."""
    window_segments: int = 20
    """Segments listed; longer than the 6 x TD skip boundary so delta updates save bytes."""
    blocking_timeout_factor: float = 3.0
    """A blocked playlist or part request fails with 503 after this many target durations (B8)."""


@dataclass(slots=True)
class HubConfig:
    subscriber_queue_frames: int = 512
    """Frames a subscriber may lag before the hub drops for it; about 8 s at 30 fps + audio."""
    subscriber_queue_bytes: int = 32 * 1024 * 1024
    """Bytes a subscriber may lag before the hub drops for it."""


@dataclass(slots=True)
class HttpConfig:
    cors_origin: str = "*"
    """Access-Control-Allow-Origin for playlists and media; browsers on other origins play."""
    segment_max_age: int = 3600
    """Cache lifetime of segments: URIs are unique per stream session, so they never change."""
    viewer_timeout: float = 15.0
    """Seconds after its last request that a viewer stops counting in /api/streams."""


@dataclass(slots=True)
class AuthConfig:
    publish_keys: dict[str, str] = field(default_factory=dict)
    """Per-stream publish keys ({"shop1": "secret"}); a listed stream needs ?key=K to publish."""
    default_publish_key: str = ""
    """Key required to publish any stream not listed above; empty means open publishing."""


@dataclass(slots=True)
class DemoConfig:
    stream: str = "demo"
    width: int = 1280
    height: int = 720
    fps: int = 30
    gop_seconds: float = 2.0
    video_bitrate: int = 2_000_000
    audio_bitrate: int = 128_000


@dataclass(slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    rtsp: RtspConfig = field(default_factory=RtspConfig)
    rtp: RtpConfig = field(default_factory=RtpConfig)
    hls: HlsConfig = field(default_factory=HlsConfig)
    llhls: LlHlsConfig = field(default_factory=LlHlsConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)


def _apply(section: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where}.{key}")
        current = getattr(section, key)
        if isinstance(section, RtpConfig) and key == "inputs":
            value = _rtp_inputs(value, f"{where}.{key}")
        if isinstance(current, bool) != isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be {type(current).__name__}")
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        if not isinstance(value, type(current)):
            raise ConfigError(f"{where}.{key} must be {type(current).__name__}, not {type(value).__name__}")
        setattr(section, key, value)


def _rtp_inputs(value: Any, where: str) -> list[RtpInputConfig]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where} must be a list of tables ([[rtp.inputs]])")
    inputs = []
    for i, table in enumerate(value):
        item = RtpInputConfig()
        _apply(item, table, f"{where}[{i}]")
        if not item.stream or not item.sdp:
            raise ConfigError(f"{where}[{i}] needs both stream and sdp")
        inputs.append(item)
    return inputs


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults, then the TOML file, then command-line overrides ({"server": {"http_port": 1}})."""
    config = Config()
    layers: list[dict[str, Any]] = []
    if path is not None:
        with open(path, "rb") as f:
            try:
                layers.append(tomllib.load(f))
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: {e}") from e
    if overrides:
        layers.append(overrides)
    for layer in layers:
        for section_name, values in layer.items():
            if not hasattr(config, section_name) or not isinstance(values, dict):
                raise ConfigError(f"unknown section [{section_name}]")
            _apply(getattr(config, section_name), values, section_name)
    validate(config)
    return config


def validate(config: Config) -> None:
    hls = config.hls
    if hls.segment_duration <= 0:
        raise ConfigError("hls.segment_duration must be positive")
    if hls.window_segments < 6:
        raise ConfigError("hls.window_segments must be at least 6 (Apple HLS A8.11)")
    if config.llhls.window_segments < 6:
        raise ConfigError("llhls.window_segments must be at least 6 (Apple HLS A8.11)")
    if not 0.05 <= config.llhls.part_duration <= 2.0:
        raise ConfigError("llhls.part_duration must be between 0.05 and 2 seconds")
    if not 128 <= config.rtmp.max_chunk_size <= 0x7FFFFFFF:
        raise ConfigError("rtmp.max_chunk_size must be between 128 and 2^31-1")

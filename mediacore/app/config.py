"""Configuration: a TOML file plus command-line flags (flags win).

Each section is a dataclass with every default and the reason for it, named once: the
sections that one layer owns live in that layer ([rtmp] in ingest/rtmp/config.py, [rtsp] in
ingest/rtp/config.py, [hub], [hls] and [llhls], [http] beside the hub, packager and origin);
this module adds the app's own sections and loads, overrides and validates the whole.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.rtmp.config import RtmpConfig
from ingest.rtp.config import RtspConfig
from mediacore.hub.config import HubConfig
from mediacore.origin.config import HttpConfig
from mediacore.packager.config import HlsConfig, LlHlsConfig


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
    drain_timeout: float = 10.0
    """Seconds a drain (the first SIGTERM or SIGINT) takes at most, from the signal to closing
    HTTP: ingest is closed at once, publishers are disconnected, open segments and parts are
    written and every playlist gets EXT-X-ENDLIST, then HTTP serves `drain_grace` more. Set
    the orchestrator's kill timeout above it."""
    drain_grace: float = 3.0
    """Seconds HTTP keeps serving once every playlist has ended, so players fetch the final
    segment and the playlist with EXT-X-ENDLIST (cut short by `drain_timeout`)."""


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
    if hls.max_packager_restarts < 0:
        raise ConfigError("hls.max_packager_restarts must not be negative")
    if hls.packager_restart_window <= 0:
        raise ConfigError("hls.packager_restart_window must be positive")
    if config.server.drain_timeout < 0 or config.server.drain_grace < 0:
        raise ConfigError("server.drain_timeout and server.drain_grace must not be negative")
    if not 128 <= config.rtmp.max_chunk_size <= 0x7FFFFFFF:
        raise ConfigError("rtmp.max_chunk_size must be between 128 and 2^31-1")

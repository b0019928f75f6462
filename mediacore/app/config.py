"""Configuration: a TOML file plus command-line flags (flags win).

Each section is a dataclass with every default and the reason for it, named once: the
sections that one layer owns live in that layer ([rtmp] in ingest/rtmp/config.py, [rtsp] in
ingest/rtp/config.py, [hub], [hls] and [llhls], [http] beside the hub, packager and origin);
this module adds the app's own sections and loads, overrides and validates the whole.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.rtmp.config import RtmpConfig
from ingest.rtp.config import VIDEO_REPAIR_MODES, RtspConfig
from mediacore.access.identity import MIN_JWT_SECRET_BYTES
from mediacore.access.tokens import ALL_STREAMS, MIN_SECRET_BYTES, PlaybackPolicy
from mediacore.hub.config import HubConfig
from mediacore.model.names import is_stream_name
from mediacore.origin.config import MAX_THUMBNAIL_WIDTH, MIN_THUMBNAIL_WIDTH, AdminConfig, HttpConfig
from mediacore.packager.config import HlsConfig, LlHlsConfig

MIN_ADMIN_TOKEN = 16
"""Characters an admin token needs at least: short tokens can be guessed over the network."""


PLUGIN_SECTIONS: dict[str, str] = {
    "accounts": "plugins.accounts.plugin:AccountsPlugin",
    "commerce": "plugins.commerce.plugin:CommercePlugin",
    "chat": "plugins.chat.plugin:ChatPlugin",
    "audience": "plugins.audience.plugin:AudiencePlugin",
}
"""The plugins this engine knows, by name (`[plugins] enabled` lists some; each reads the
section of its name), and where each lives ("module:Class")."""


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
    data_dir: str = "data"
    """Directory for embedded state (each plugin gets a subdirectory: the commerce plugin's
    SQLite file, for one); relative paths are from the working directory."""
    tls_cert: str = ""
    """PEM certificate chain of the TLS listeners ([rtmp] tls_port for RTMPS, [rtsp] tls_port
    for RTSPS), read when the server starts; one pair serves both."""
    tls_key: str = ""
    """PEM private key of `tls_cert`."""
    cpu_affinity: bool = False
    """Pin the server to one CPU (each worker of `serve --workers N` to its own, round robin
    over the CPUs the process may use), as nginx's `worker_cpu_affinity auto`: less CPU per
    stream where moves between CPUs are dear (virtual machines), at the price of not moving
    off a CPU that other work keeps busy (mediacore/app/affinity.py)."""


@dataclass(slots=True)
class RtpInputConfig:
    stream: str = ""
    """Stream name the input publishes as (rtmp and RTSP publishers cannot take it)."""
    sdp: str = ""
    """Path of the SDP file describing the input: its m= ports are the UDP ports listened on
    (RTCP on the next port), its rtpmap/fmtp lines the codecs (what `ffmpeg -sdp_file` writes)."""
    video_repair: str = "off"
    """H.264 video under packet loss: "off" freezes it until a keyframe arrives whole,
    "reencode" conceals the losses and re-encodes it (as [rtsp] video_repair)."""
    video_repair_bitrate: int = 2_500_000
    """Bits per second of the re-encoded video (as [rtsp] video_repair_bitrate)."""


@dataclass(slots=True)
class RtpConfig:
    inputs: list[RtpInputConfig] = field(default_factory=list)
    """Raw RTP/UDP inputs, one [[rtp.inputs]] table each."""
    input_timeout: float = 10.0
    """Seconds without RTP on a raw input before its stream is unpublished (it republishes
    when packets come back)."""


@dataclass(slots=True)
class AuthConfig:
    jwt_secret: str = ""
    """HS256 secret of the JWTs that identify viewers, hosts and admins to the plugins
    (`Authorization: Bearer`), shared with the shop backend that issues them; at least 32
    bytes. Empty: a random secret per process (the embedded accounts' tokens work until a
    restart; set one for a shop backend or several nodes)."""
    publish_keys: dict[str, str] = field(default_factory=dict)
    """Per-stream publish keys ({"shop1": "secret"}); a listed stream needs ?key=K to publish.
    The admin API rotates and revokes keys here at runtime (they last until a restart)."""
    default_publish_key: str = ""
    """Key required to publish any stream not listed above; empty means no key is checked
    for them (open publishing, unless a publish hook decides)."""
    publish_hook: str = ""
    """URL that decides every publish attempt that passed the keys: POST JSON {stream, key,
    protocol, remote}; a 2xx answer allows, anything else refuses, and so does no answer
    within publish_hook_timeout (fail-closed). Empty: no hook."""
    publish_hook_timeout: float = 2.0
    """Seconds the hook may take to answer before the attempt is refused: encoders give up
    on a publish after about 10 s, and a streamer should hear why well before that."""
    publish_hook_recheck: float = 30.0
    """Seconds between re-checks of every live publisher the hook admitted: a refusal then
    (the streamer's key was revoked) stops the publisher; a re-check that gets no answer
    keeps it (a hook outage does not end every live show)."""
    max_failed_publishes: int = 5
    """Refused publish attempts (wrong key, refused by the hook, a takeover) one address may
    make within failed_publish_window; past it, its attempts are refused without checking
    (the hook is not asked) until the window has passed: keys cannot be guessed."""
    failed_publish_window: float = 60.0
    """Seconds over which max_failed_publishes counts, from an address's first refusal."""
    allow_open_publish: bool = False
    """Start even though anyone may publish (no default_publish_key, no publish_hook) on a
    server listening beyond loopback. Without it such a server refuses to start."""
    playback_secret: str = ""
    """HMAC-SHA256 key of playback tokens (`mediacore sign-url` signs with it; edges verify
    with it). At least 16 bytes when playback_streams is set; keep it out of version control."""
    playback_streams: list[str] = field(default_factory=list)
    """Streams whose playlists and media need a signed `?token=` (403 without, 410 once
    expired); `["*"]` protects every stream. Empty: playback is open."""

    def playback_policy(self) -> PlaybackPolicy:
        return PlaybackPolicy(self.playback_secret.encode(), tuple(self.playback_streams))


@dataclass(slots=True)
class PluginsConfig:
    enabled: list[str] = field(default_factory=lambda: ["accounts", "commerce", "chat"])
    """Plugins to run, by name (see mediacore/app/plugins.py); each reads its own section
    ([accounts], [commerce], [chat], ...). Default: the embedded accounts (register, log in,
    guest tokens for the watch page's buy button) and the commerce plugin with its embedded
    store (SQLite under [server] data_dir unless [commerce] redis_url names a Redis), and chat
    (in-process rooms unless [chat] redis_url names a Redis)."""


@dataclass(slots=True)
class ClusterConfig:
    redis_url: str = ""
    """Redis that holds the origin cluster's registry (redis://host:6379/0): every node
    registers the streams it owns there and finds the owner of the ones it does not.
    Empty: a single node, nothing is registered and nothing is redirected."""
    node_url: str = ""
    """This node's base URL as the other nodes, edges and players reach it
    (http://origin-2.internal:8080): where requests for its streams are redirected. Empty:
    http://HOST:HTTP_PORT from [server] (the host name of the machine for 0.0.0.0)."""
    ttl: float = 5.0
    """Seconds a registration lasts unless renewed: a node that dies drops out of the
    registry this long after its last renewal, and its names may then be published on
    another node."""
    renew: float = 1.0
    """Seconds between renewals of this node's registrations (well under ttl, so a slow
    round or two does not let them lapse)."""
    key_prefix: str = "mediacore:cluster:"
    """Prefix of the registry's Redis keys (one `PREFIX stream:NAME` per stream); nodes of one
    cluster share it. For Redis Cluster put a hash tag in it (`{cluster}:`)."""
    redis_timeout: float = 1.0
    """Seconds one registry command may take (a publish's claim, a lookup for a redirect, a
    renewal round): past it the node carries on as if alone for that request and logs it."""


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
    admin: AdminConfig = field(default_factory=AdminConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each plugin's own section, as read from the file (the plugin checks it)."""


log = logging.getLogger(__name__)

RETIRED_SETTINGS = {
    "hls.mux_threads": "segments are muxed on the event loop, large ones on one thread; the muxer holds the GIL",
}
"""Settings an earlier release read and this one ignores, with why: a file that still sets one
loads, with a warning, instead of failing on an unknown key."""


def _apply(section: Any, values: dict[str, Any], where: str) -> None:
    known = {f.name: f for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in known:
            retired = RETIRED_SETTINGS.get(f"{where}.{key}")
            if retired is None:
                raise ConfigError(f"unknown setting {where}.{key}")
            log.warning("%s.%s is no longer used and is ignored: %s", where, key, retired)
            continue
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
            if section_name in PLUGIN_SECTIONS and isinstance(values, dict):
                config.plugin_settings.setdefault(section_name, {}).update(values)
                continue
            if section_name == "plugin_settings" or not hasattr(config, section_name) or not isinstance(values, dict):
                raise ConfigError(f"unknown section [{section_name}]")
            _apply(getattr(config, section_name), values, section_name)
    validate(config)
    return config


def validate(config: Config) -> None:
    if config.auth.jwt_secret and len(config.auth.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(f"auth.jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes (or empty)")
    for name in config.plugins.enabled:
        if name not in PLUGIN_SECTIONS:
            raise ConfigError(f"plugins.enabled: unknown plugin {name!r} (known: {', '.join(sorted(PLUGIN_SECTIONS))})")
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
    repairs = [("rtsp", config.rtsp.video_repair, config.rtsp.video_repair_bitrate)]
    repairs += [(f"rtp.inputs[{i}]", r.video_repair, r.video_repair_bitrate) for i, r in enumerate(config.rtp.inputs)]
    for name, mode, bitrate in repairs:
        if mode not in VIDEO_REPAIR_MODES:
            raise ConfigError(f"{name}.video_repair must be one of {', '.join(VIDEO_REPAIR_MODES)}, not {mode!r}")
        if bitrate <= 0:
            raise ConfigError(f"{name}.video_repair_bitrate must be positive")
    for name, section in (("rtmp", config.rtmp), ("rtsp", config.rtsp)):
        if not 0 <= section.tls_port <= 65535:
            raise ConfigError(f"{name}.tls_port must be between 0 (off) and 65535")
        if section.tls_handshake_timeout <= 0:
            raise ConfigError(f"{name}.tls_handshake_timeout must be positive")
        if section.tls_port and not (config.server.tls_cert and config.server.tls_key):
            raise ConfigError(f"{name}.tls_port needs server.tls_cert and server.tls_key")
    auth = config.auth
    for name in auth.playback_streams:
        if not isinstance(name, str) or not (name == ALL_STREAMS or is_stream_name(name)):
            raise ConfigError(f"auth.playback_streams: {name!r} is not a stream name or *")
    if auth.playback_streams and len(auth.playback_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"auth.playback_secret must be at least {MIN_SECRET_BYTES} bytes when playback_streams is set"
        )
    http = config.http
    if http.header_timeout <= 0 or http.keepalive_timeout <= 0:
        raise ConfigError("http.header_timeout and http.keepalive_timeout must be positive")
    if http.max_connections_per_ip < 0 or http.max_connections < 0:
        raise ConfigError("http.max_connections_per_ip and http.max_connections must be 0 (no limit) or more")
    if not http.thumbnail_interval > 0:
        raise ConfigError("http.thumbnail_interval must be positive")
    if not MIN_THUMBNAIL_WIDTH <= http.thumbnail_width <= MAX_THUMBNAIL_WIDTH:
        raise ConfigError(f"http.thumbnail_width must be {MIN_THUMBNAIL_WIDTH} to {MAX_THUMBNAIL_WIDTH} pixels")
    if not 0 <= config.admin.port <= 65535:
        raise ConfigError("admin.port must be between 0 and 65535")
    if config.admin.token and len(config.admin.token) < MIN_ADMIN_TOKEN:
        raise ConfigError(f"admin.token must be at least {MIN_ADMIN_TOKEN} characters (or empty)")
    if auth.publish_hook and not auth.publish_hook.startswith(("http://", "https://")):
        raise ConfigError("auth.publish_hook must be an http:// or https:// URL")
    if auth.publish_hook_timeout <= 0 or auth.publish_hook_recheck <= 0:
        raise ConfigError("auth.publish_hook_timeout and auth.publish_hook_recheck must be positive")
    if auth.max_failed_publishes < 1 or auth.failed_publish_window <= 0:
        raise ConfigError("auth.max_failed_publishes must be at least 1 and auth.failed_publish_window positive")
    cluster = config.cluster
    if cluster.redis_url and not cluster.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("cluster.redis_url must be a redis://, rediss:// or unix:// URL (or empty)")
    if cluster.node_url and not cluster.node_url.startswith(("http://", "https://")):
        raise ConfigError("cluster.node_url must be an http:// or https:// URL (or empty)")
    if not 0 < cluster.renew <= cluster.ttl / 2:
        raise ConfigError("cluster.renew must be positive and at most half of cluster.ttl")
    if cluster.redis_timeout <= 0 or cluster.redis_timeout >= cluster.ttl:
        raise ConfigError("cluster.redis_timeout must be positive and below cluster.ttl")


def publish_is_open(auth: AuthConfig) -> bool:
    """Whether anyone may publish some stream name: no default key and no hook."""
    return not auth.default_publish_key and not auth.publish_hook


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_open_publish(config: Config) -> None:
    """Refuse a server on which anyone could publish, reachable beyond this machine. Checked
    when the server starts rather than when the file loads: the defaults themselves (0.0.0.0,
    no key) are such a server, and a file listing them is still a valid file."""
    host = config.server.host
    if publish_is_open(config.auth) and not config.auth.allow_open_publish and not is_loopback(host):
        raise ConfigError(
            f"anyone could publish: no [auth] default_publish_key or publish_hook, and server.host = "
            f"{host!r} is reachable beyond this machine. Set a key or a hook, listen on 127.0.0.1, "
            f"or set [auth] allow_open_publish = true"
        )


def public_base_url(server: ServerConfig, http_port: int) -> str:
    """The origin's base URL in the links it prints and serves: [server] public_url, else
    from [server] host and the HTTP port (loopback for a wildcard address)."""
    if server.public_url:
        return server.public_url.rstrip("/")
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{http_port}"

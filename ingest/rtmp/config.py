"""The RTMP core's limits, named once: each bound with its default and the reason for it.

The app's configuration uses this dataclass as its [rtmp] section; the wire cores (chunk,
AMF0, session) take their values from here, never from the app.
"""

from __future__ import annotations

from dataclasses import dataclass

PEER_SEND_BUFFER = 64 * 1024
"""The kernel send buffer (SO_SNDBUF) of each RTMP connection: what we send a publisher is a
few hundred bytes of replies and acknowledgements, so a small kernel buffer costs nothing,
and a peer that never reads is found out after max_write_buffer and about 130 KB in the
kernel, rather than after the megabytes Linux's autotuning would let the kernel hold for it
(up to net.ipv4.tcp_wmem's 4 MiB by default), each reply one a hostile peer made us compute."""


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
    handshake_timeout: float = 10.0
    """Seconds for C0+C1+C2 to arrive; an idle socket that never handshakes is closed."""
    idle_timeout: float = 30.0
    """Seconds without any bytes from a connection before it is closed."""
    window_ack_size: int = 2_500_000
    """Acknowledgement window we announce (bytes); the same figure ffmpeg and nginx-rtmp use."""
    out_chunk_size: int = 4096
    """Chunk size for what we send; replies are small, 4096 keeps them in one chunk."""
    publish_deadline: float = 15.0
    """Seconds from connecting to publishing: a socket that handshakes and pings but never
    publishes would hold its buffers forever. Encoders publish within a second or two."""
    max_connections: int = 1000
    """RTMP connections open at once; past it new ones are closed at once (a shop runs far fewer
    publishers, and each may hold max_buffered_bytes)."""
    max_connections_per_ip: int = 20
    """RTMP connections open at once from one address: a studio behind one NAT runs a handful
    of encoders; a flood from one host must not take the listener."""
    max_write_buffer: int = 1024 * 1024
    """Bytes queued for a peer that does not read our replies before it is closed: replies are
    a few hundred bytes; only a peer that never reads gets here."""
    max_publishes_per_connection: int = 4
    """Publish commands one connection may make: encoders publish once, some republish after
    a hiccup; a publish/unpublish loop must not create streams without end."""
    max_control_messages_per_second: float = 100.0
    """Sustained rate of messages other than a publishing session's audio and video (pings,
    user control, acknowledgements, commands, data) one connection may send; past it and its
    burst the connection is closed. ffmpeg and OBS send about ten when they start, then almost
    none; timed metadata at 60 fps stays below it. 0 disables the bound."""
    control_message_burst: int = 300
    """Messages other than media a connection may send at once before the rate applies."""
    tls_port: int = 0
    """Port of the RTMPS listener (RTMP inside TLS, `rtmps://`), beside the plain one; 0 leaves
    it off. Needs [server] tls_cert and tls_key. Every limit above applies to it as well."""
    tls_handshake_timeout: float = 10.0
    """Seconds a connection to the RTMPS port may take to complete its TLS handshake before it
    is dropped: a client that opens TCP and never finishes TLS holds a socket and TLS state
    that no other limit sees (the connection caps count a connection once TLS is up)."""

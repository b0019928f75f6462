"""What a request is, for the edge: its canonical cache key, the query sent upstream, and who sent it.

Pure functions on strings; the server hands them the request's path, raw query and peer.

- `_HLS_msn` / `_HLS_part` are non-negative integers and are keyed (and sent upstream) as such:
  `_HLS_msn=007` and `_HLS_msn=7` are one key and one upstream fetch. Anything else is a
  `BadDirective` (the edge answers 400 without asking the upstream), as is `_HLS_part`
  without `_HLS_msn` (draft-pantos-hls-rfc8216bis S6.2.5.2: the server MUST return 400).
- `_HLS_skip` is kept only as `YES` or `v2`, the values the origin acts on; any other value
  is dropped from the key and from the upstream request (the origin ignores it, so it
  could only bust the cache).
- Only playlists take directives; on any other path the `_HLS_` parameters are dropped.
- The playback token (`token`) is neither part of the key nor sent upstream as received: it
  is handed to the server apart (`EdgeRequest.token`), which checks it itself and signs its
  own for the upstream (see `edge.server`). Other parameters go upstream untouched but are
  not part of the key.
- The client is the peer address; `X-Forwarded-For` is read only when the peer is one of
  the configured trusted proxies (and a trusted proxy that names no client is no one client).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_plus

from mediacore.access.tokens import TOKEN_PARAM
from mediacore.playlist.uris import STREAM_ROOT

MSN, PART, SKIP = "_HLS_msn", "_HLS_part", "_HLS_skip"
HLS_DIRECTIVES = (MSN, PART, SKIP)
"""The LL-HLS delivery directives, in the order they appear in a cache key (B11)."""
SKIP_VALUES = ("YES", "v2")
"""The `_HLS_skip` values the origin answers with a delta update; any other value it ignores."""
MAX_DIRECTIVE_DIGITS = 18
"""Significant digits of `_HLS_msn` / `_HLS_part` (leading zeros aside); the origin refuses
more, as no stream reaches 10^18 segments."""
MAX_CLIENT_TEXT = 64
"""Characters kept of a forwarded client address that is not an IP address."""

MEDIA_PREFIX = STREAM_ROOT.split("{", 1)[0]
"""/live/: the stream's name is the path segment after it."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BadDirective(ValueError):
    """A delivery directive the edge refuses with 400 (the message says which and why)."""


@dataclass(slots=True)  # not frozen, like EdgeRequest: made per request (edge/fastpath.py, Head)
class Directives:
    msn: int | None = None
    part: int | None = None
    skip: str | None = None

    @property
    def blocking(self) -> bool:
        """An `_HLS_msn` request: the upstream may hold it until that part exists."""
        return self.msn is not None

    def query(self) -> str:
        """The canonical form, in the fixed order: `_HLS_msn=7&_HLS_part=2&_HLS_skip=YES`."""
        if self.msn is None and self.part is None and self.skip is None:
            return ""  # most requests: a segment, a part, a plain playlist
        pairs = [(MSN, self.msn), (PART, self.part), (SKIP, self.skip)]
        return "&".join(f"{name}={value}" for name, value in pairs if value is not None)


@dataclass(slots=True)
class EdgeRequest:
    key: str
    """Cache and collapsing key: the path plus the canonical directives."""
    upstream: str
    """Path and query sent upstream: the canonical directives, then every other parameter as received."""
    directives: Directives
    token: str | None = None
    """The request's playback token (its first `token` parameter, decoded), None without one."""


def directive_number(name: str, value: str) -> int:
    """A non-negative decimal integer (ASCII digits, leading zeros allowed) or BadDirective."""
    if not value or not value.isascii() or not value.isdigit():
        raise BadDirective(f"{name} must be a non-negative integer")
    significant = value.lstrip("0") or "0"
    if len(significant) > MAX_DIRECTIVE_DIGITS:
        raise BadDirective(f"{name} has more than {MAX_DIRECTIVE_DIGITS} digits")
    return int(significant)


def split_query(raw_query: str) -> tuple[dict[str, str], list[str], str | None]:
    """The first value of each `_HLS_` directive (decoded, as the origin reads them), the
    other parameters as received (raw, in order) and the first playback token (decoded)."""
    directives: dict[str, str] = {}
    others: list[str] = []
    token: str | None = None
    for piece in raw_query.split("&"):
        if not piece:
            continue
        raw_name, _, raw_value = piece.partition("=")
        name = unquote_plus(raw_name)
        if name in HLS_DIRECTIVES:
            directives.setdefault(name, unquote_plus(raw_value))
        elif name == TOKEN_PARAM:
            token = unquote_plus(raw_value) if token is None else token
        else:
            others.append(piece)
    return directives, others, token


def parse_directives(values: dict[str, str]) -> Directives:
    msn = directive_number(MSN, values[MSN]) if MSN in values else None
    part = directive_number(PART, values[PART]) if PART in values else None
    if part is not None and msn is None:
        raise BadDirective(f"{PART} without {MSN}")
    skip = values.get(SKIP)
    return Directives(msn, part, skip if skip in SKIP_VALUES else None)


def edge_request(path: str, raw_path: str, raw_query: str, playlist: bool) -> EdgeRequest:
    """`path` is the decoded path (the key), `raw_path` the path as received (sent upstream).
    Raises BadDirective for a playlist request with a malformed `_HLS_msn` / `_HLS_part`."""
    values, others, token = split_query(raw_query)
    directives = parse_directives(values) if playlist else Directives()
    canonical = directives.query()
    key = path + ("?" + canonical if canonical else "")
    query = "&".join(([canonical] if canonical else []) + others)
    return EdgeRequest(key, raw_path + ("?" + query if query else ""), directives, token)


def stream_of(path: str) -> str | None:
    """The stream a `/live/STREAM/...` path belongs to; None for any other path."""
    if not path.startswith(MEDIA_PREFIX):
        return None
    name, slash, _ = path[len(MEDIA_PREFIX) :].partition("/")
    return name if slash and name else None


def with_param(path_qs: str, name: str, value: str) -> str:
    """`path_qs` with `name=value` appended to its query (value URL-safe as it is)."""
    return f"{path_qs}{'&' if '?' in path_qs else '?'}{name}={value}"


def parse_networks(addresses: Sequence[str]) -> tuple[Network, ...]:
    """Trusted proxies as networks: `10.0.0.5`, `10.0.0.0/8` or `::1` (ValueError on anything else)."""
    return tuple(ipaddress.ip_network(a.strip(), strict=False) for a in addresses)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(text: str, trusted: Sequence[Network]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str, trusted: Sequence[Network]) -> str | None:
    """Who sent the request: the peer address, unless the peer is a trusted proxy; then the
    nearest `X-Forwarded-For` hop (read right to left) that is not itself a trusted proxy. None
    when no such hop exists: a trusted proxy (a downstream edge, say) asking on its own behalf,
    for the many viewers it collapses. From any other peer the header is ignored: a client
    could write anything in it."""
    peer = peer or "?"
    if not trusted or not _trusted(peer, trusted):
        return _canonical(peer)
    for hop in reversed(forwarded_for.split(",")):
        if hop.strip() and not _trusted(hop, trusted):
            return _canonical(hop.strip())
    return None


def _canonical(text: str) -> str:
    address = _address(text)
    return str(address) if address is not None else text[:MAX_CLIENT_TEXT]

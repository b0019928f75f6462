"""The origin cluster's registry, sans-I/O: which streams this node must keep registered as
their owner, what to write in each renewal round, and what a round's answer means.

Every node of a cluster writes `PREFIX stream:NAME = NODE_URL` with an expiry of `[cluster]
ttl` for each stream it owns (live, reconnecting, or ended but still served) and renews it
every `renew` seconds; the key is written only if it is absent or already this node's (one
Lua script, so two nodes never both own a name). A publish claims the name first (the same
script): a name another node holds is refused. A stream the node forgets is released (the
key deleted if it is still this node's). A node that dies stops renewing, and its keys
expire `ttl` seconds after its last round; its names are free again.

Every round also records where each stream's playlists stand (`PREFIX position:NAME`, kept
POSITION_MEMORY seconds): a stream republished on another node after its owner died continues
from there, POSITION_SKIP sequence numbers on, behind a discontinuity, instead of starting
again at 0 (which would hand out URIs that players and caches already hold for other media).

`Registry` keeps the state and decides; the asyncio shell (`cluster_redis.ClusterNode`)
runs the rounds against Redis with the time passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

STREAM_KEY = "stream:"
"""What follows the key prefix in a stream's registration key (`PREFIX stream:NAME`)."""

POSITION_KEY = "position:"
"""What follows the key prefix in a stream's playlist position key (`PREFIX position:NAME`)."""

POSITION_MEMORY = 3600.0
"""Seconds a stream's last playlist position is kept after its last renewal: as long as a CDN
or a player may hold its segment and part URIs, so a republish never reuses one of them."""

POSITION_SKIP = 4
"""Media sequence numbers a republish on another node skips past the recorded position: the
dead node may have closed segments after its last renewal round wrote the position (one round,
`renew` ≤ ttl seconds, at 1–2 s segments), and those URIs must not name new media."""

MAX_POSITION_BYTES = 1024
"""Largest position record read back from Redis: three pairs of integers in JSON; anything
bigger is not ours and is ignored."""

CLAIM_SCRIPT = """
local owners = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == false or owner == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    owner = ARGV[1]
  end
  owners[i] = owner
end
return owners
"""
"""Claim or renew each key for node ARGV[1] for ARGV[2] ms, unless another node holds it;
returns each key's owner after the call (this node's URL when it holds it)."""

RELEASE_SCRIPT = """
local released = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"""
"""Delete each key that node ARGV[1] still holds (never another node's)."""


def stream_key(prefix: str, name: str) -> str:
    return f"{prefix}{STREAM_KEY}{name}"


def position_key(prefix: str, name: str) -> str:
    return f"{prefix}{POSITION_KEY}{name}"


@dataclass(frozen=True, slots=True)
class Position:
    """Where one stream's playlists stand: per output (`hls`, `ll-video`, `ll-audio`), the next
    media sequence number and the discontinuity sequence."""

    outputs: tuple[tuple[str, int, int], ...]

    def encode(self) -> str:
        return json.dumps({name: [msn, dseq] for name, msn, dseq in self.outputs}, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes | None) -> Position | None:
        """The position stored in Redis, or None when there is none or it is not well formed."""
        if text is None or len(text) > MAX_POSITION_BYTES:
            return None
        try:
            raw = json.loads(text)
        except ValueError:
            return None
        if not isinstance(raw, dict):
            return None
        outputs = []
        for name, pair in sorted(raw.items()):
            if not (isinstance(pair, list) and len(pair) == 2 and all(type(n) is int and n >= 0 for n in pair)):
                return None
            outputs.append((str(name), pair[0], pair[1]))
        return cls(tuple(outputs))

    def resumed(self, output: str) -> tuple[int, int] | None:
        """(media sequence, discontinuity sequence) for `output` continued on another node:
        POSITION_SKIP numbers on, after one discontinuity."""
        for name, msn, dseq in self.outputs:
            if name == output:
                return msn + POSITION_SKIP, dseq + 1
        return None


@dataclass(frozen=True, slots=True)
class Round:
    """One renewal round: names to claim or renew (in order) and names to release."""

    renew: tuple[str, ...]
    release: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A name this node serves that another node holds (after a Redis outage both may have
    taken it): this node gives it up."""

    name: str
    owner: str


class Registry:
    """What this node has registered and must keep registered (sans-I/O; `now` is monotonic
    seconds passed in)."""

    def __init__(self, node_url: str, ttl: float) -> None:
        self.node_url = node_url
        self.ttl = ttl
        self.registered: set[str] = set()
        """Names whose last claim or renewal this node saw succeed (and has not released)."""
        self._claims: dict[str, float] = {}
        """Names claimed for a publish that is being set up (not a stream yet), with the time:
        kept registered for one ttl even if the stream never starts."""
        self.conflicted: dict[str, str] = {}
        """Names another node holds while this node still serves them, with that node."""
        self.failures = 0
        """Rounds in a row that failed (Redis unreachable)."""
        self.written: dict[str, Position] = {}
        """The position last written for each name this node holds."""
        self.resume: dict[str, Position] = {}
        """Positions found in the registry when this node claimed a name: where a stream
        another node served last continues here."""

    def claimed(self, name: str, owner: str, now: float) -> bool:
        """A publish's claim came back with `owner`: True when this node holds the name now."""
        if owner != self.node_url:
            return False
        self._claims[name] = now
        self.registered.add(name)
        self.conflicted.pop(name, None)
        return True

    def round(self, serving: Iterable[str], now: float) -> Round:
        """What to write now: every name this node serves (and recent claims), except those
        another node holds; release what it registered and serves no more."""
        self._claims = {name: at for name, at in self._claims.items() if now - at < self.ttl}
        serving = set(serving)
        self.conflicted = {name: owner for name, owner in self.conflicted.items() if name in serving}
        wanted = (serving | set(self._claims)) - set(self.conflicted)
        return Round(tuple(sorted(wanted)), tuple(sorted(self.registered - wanted)))

    def positions_due(self, positions: Mapping[str, Position]) -> dict[str, Position]:
        """The positions to write this round: those of names this node holds that changed since
        they were last written."""
        self.written = {name: p for name, p in self.written.items() if name in self.registered}
        return {name: p for name, p in positions.items() if name in self.registered and self.written.get(name) != p}

    def applied(self, done: Round, owners: Sequence[str]) -> list[Conflict]:
        """The round went through: `owners` holds each renewed name's owner now. Returns the
        names another node holds (new conflicts)."""
        self.failures = 0
        self.registered.difference_update(done.release)
        conflicts = []
        for name, owner in zip(done.renew, owners, strict=True):
            if owner == self.node_url:
                self.registered.add(name)
                continue
            self.registered.discard(name)
            self._claims.pop(name, None)
            if name not in self.conflicted:
                self.conflicted[name] = owner
                conflicts.append(Conflict(name, owner))
        return conflicts

    def failed(self) -> bool:
        """A round failed; True when it is worth a log line (the 1st, 2nd, 4th, 8th ... in a row)."""
        self.failures += 1
        return self.failures & (self.failures - 1) == 0

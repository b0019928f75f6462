"""Admission of blocked playlist requests (those with `_HLS_msn`): bounded per client and in total.

A blocked request may hold an upstream connection for up to 3 x TD, and each distinct
(`_HLS_msn`, `_HLS_part`, `_HLS_skip`) is its own upstream fetch; collapsing makes identical
ones free. So what is bounded is distinct keys in flight:

- per client: a viewer follows a rendition or two, one key each at a time, so a handful of
  distinct keys is plenty; viewers behind one address (a NAT) watching the same stream share
  their keys and count once. Past the bound: 429.
- in total: distinct blocked keys are distinct upstream fetches; bounding them keeps upstream
  connections free for segments, parts and plain playlists whatever many clients do. A request
  joining a key already in flight costs no connection and is not refused by this bound. Past
  it: 503.

Sans-I/O: the server calls `admit` before it waits and `release` when the request is done.
"""

from __future__ import annotations

from collections import Counter

CLIENT = "client"
UPSTREAM = "upstream"


class BlockedRequests:
    def __init__(self, per_client: int, in_total: int) -> None:
        self.per_client = per_client
        self.in_total = in_total
        self._keys: Counter[str] = Counter()  # key -> blocked requests in flight for it
        self._clients: dict[str, Counter[str]] = {}  # client -> key -> its requests in flight

    @property
    def requests(self) -> int:
        """Blocked requests in flight."""
        return self._keys.total()

    @property
    def keys(self) -> int:
        """Distinct keys in flight: the upstream fetches blocked requests hold."""
        return len(self._keys)

    def keys_of(self, client: str) -> int:
        mine = self._clients.get(client)
        return len(mine) if mine else 0

    def admit(self, client: str | None, key: str) -> str | None:
        """None when admitted (then `release` it once done), else the bound that refused it:
        CLIENT or UPSTREAM. A None client (a trusted proxy asking for the viewers behind it)
        is bounded in total only."""
        mine = self._clients.get(client) if client is not None else None
        if client is not None and (mine is None or key not in mine) and self.keys_of(client) >= self.per_client:
            return CLIENT
        if key not in self._keys and len(self._keys) >= self.in_total:
            return UPSTREAM
        if client is not None:
            if mine is None:
                mine = self._clients[client] = Counter()
            mine[key] += 1
        self._keys[key] += 1
        return None

    def release(self, client: str | None, key: str) -> None:
        if client is not None:
            mine = self._clients[client]
            mine[key] -= 1
            if mine[key] <= 0:
                del mine[key]
                if not mine:
                    del self._clients[client]
        self._keys[key] -= 1
        if self._keys[key] <= 0:
            del self._keys[key]

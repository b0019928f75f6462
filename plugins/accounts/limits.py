"""Every bound of the accounts plugin, named once with the reason it exists, and the
rate limiter that enforces the per-address and per-username ones (pure: `now` passed in)."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

MIN_USERNAME = 3
MAX_USERNAME = 32
"""Characters of a username ([A-Za-z0-9_.-]): short enough for a chat line and a URL, long
enough for a real name; it is the JWT `sub`."""
MIN_PASSWORD = 8
"""Characters a password needs at least (NIST SP 800-63B's minimum for user-chosen ones)."""
MAX_PASSWORD = 256
"""Characters of a password: passphrases fit; the hash cost does not grow with it, but a
bound keeps a hostile body from being hashed at all."""
MAX_BODY = 4096
"""Bytes of a request body: a username and a password in JSON are a few hundred; anything
larger is refused before it is read."""

MAX_TRACKED_KEYS = 100_000
"""Addresses and usernames the rate limiter remembers at once; past it the oldest windows are
forgotten (an attacker rotating through many addresses cannot grow memory without bound)."""

GUEST_SUB_PREFIX = "guest-"
"""Guests' user ids start with it, so other plugins (chat) can tell them from accounts."""

MAX_CONCURRENT_HASHES = 2
"""scrypt computations at once (logins and registrations): each takes ~128 MiB and tens of
milliseconds of a core with the default cost; more would only queue on a small machine's
cores and let a burst of logins exhaust memory."""


@dataclass(slots=True)
class _Window:
    started: float
    count: int


class WindowLimiter:
    """At most `limit` events per key within a fixed window of `window` seconds from the
    key's first event. `hit(key, now)` counts an event and returns 0 when it is allowed, or
    the seconds until the key may try again (for Retry-After)."""

    def __init__(self, limit: int, window: float, max_keys: int = MAX_TRACKED_KEYS) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def _current(self, key: str, now: float) -> _Window:
        w = self._windows.get(key)
        if w is None or now - w.started >= self.window:
            w = _Window(now, 0)
            self._windows[key] = w
            self._windows.move_to_end(key)
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        return w

    def blocked_for(self, key: str, now: float) -> int:
        """Seconds until `key` may act again (0: it may now); counts nothing."""
        w = self._windows.get(key)
        if w is None or now - w.started >= self.window or w.count < self.limit:
            return 0
        return max(1, math.ceil(w.started + self.window - now))

    def hit(self, key: str, now: float) -> int:
        """Count one event for `key`: 0 if it is within the limit, else seconds to wait."""
        w = self._current(key, now)
        if w.count >= self.limit:
            return max(1, math.ceil(w.started + self.window - now))
        w.count += 1
        return 0

    def __len__(self) -> int:
        return len(self._windows)

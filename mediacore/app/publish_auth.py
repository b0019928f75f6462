"""Who may publish: the local half of publish authorization, sans-I/O (time passed in).

The engine asks `PublishPolicy.check()` first; only an attempt it lets through goes on to
the publish hook (if one is configured), and a refusal by the hook comes back here as
`failed()`. The rules:

- Rate limit: an address with `max_failed_publishes` refused attempts (wrong key, refused
  by the hook, a takeover) within `failed_publish_window` seconds is refused at once, without
  asking the hook, until the window has passed. Hook errors do not count: they are not the
  client's fault.
- Keys: a stream listed in `publish_keys` needs its key; any other stream needs
  `default_publish_key` when one is set. Compared in constant time.
- Resume: while a stream waits for its publisher to come back (within `[hls] end_grace`),
  only the same credentials may continue it: the same key and, when that key proves nothing
  about who holds it (the default key, no key at all), the same address. Once the stream has
  ended (EXT-X-ENDLIST) or been forgotten, the name is free again.

Refusal reasons name what failed, never the key, and go to the peer and the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass

from mediacore.app.config import AuthConfig
from mediacore.hub.publisher import PublishAttempt
from mediacore.model.counting import worth_logging

log = logging.getLogger("mediacore.auth")

MAX_TRACKED_ADDRESSES = 65536
"""Addresses whose failed attempts are remembered at once: a few MiB at most, and far more
than the addresses that fail within one window unless the server is attacked from a whole
network, in which case the oldest are forgotten first."""

REASONS = ("rate_limited", "key", "takeover", "hook", "hook_error", "revoked", "cluster")
"""Every reason a publish is refused or a publisher stopped for (revoked: the hook refused it
on re-check; cluster: another node of the origin cluster owns the name): the label values of
mediacore_publish_refused_total."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt is refused: `reason` is one of REASONS (a metric label), `message`
    the text for the peer and the log."""

    reason: str
    message: str


@dataclass(slots=True)
class _Failures:
    window_start: float
    count: int = 0
    refused: int = 0  # attempts refused at once in this window, for logging once per burst


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class PublishPolicy:
    def __init__(self, config: AuthConfig, keys: MutableMapping[str, str] | None = None) -> None:
        """`keys`: the per-stream keys (default `config.publish_keys`; with workers, the
        machine's shared ones)."""
        self.config = config
        self._keys = keys
        self._failures: dict[str, _Failures] = {}

    @property
    def keys(self) -> MutableMapping[str, str]:
        """The per-stream keys now (the configuration's are read at each use: an operator's
        tooling may replace the dict)."""
        return self.config.publish_keys if self._keys is None else self._keys

    # Keys ------------------------------------------------------------------------------

    def expected_key(self, name: str) -> str:
        """The key `name` needs ("" when this server checks none for it)."""
        return self.keys.get(name, self.config.default_publish_key)

    def key_allows(self, name: str, key: str) -> bool:
        expected = self.expected_key(name)
        return not expected or hmac.compare_digest(key_digest(expected), key_digest(key))

    def shared_credentials(self, attempt: PublishAttempt) -> bool:
        """Whether the attempt's key proves nothing about who holds it: no per-stream key
        for the name, and either no key at all or the default key, or nothing but this
        server's default key vouched for it (no hook)."""
        if attempt.stream in self.keys:
            return False
        if self.config.publish_hook and attempt.key and attempt.key != self.config.default_publish_key:
            return False  # the hook admitted this key for this stream: it names the streamer
        return True

    # Decisions -------------------------------------------------------------------------

    def check(self, attempt: PublishAttempt, previous: PublishAttempt | None, now: float) -> Refusal | None:
        """The local decision on `attempt`; `previous` is the attempt that last published the
        stream while it is reconnecting (None when it is new, live or ended)."""
        blocked = self._blocked(attempt.remote, now)
        if blocked is not None:
            return blocked
        if not self.key_allows(attempt.stream, attempt.key):
            return self.failed(attempt, Refusal("key", "publish key is missing or wrong"), now)
        # The resume rule guards a credential that still works: after the operator rotated
        # the stream's key, the old publisher cannot resume and the new key's holder may.
        guarded = previous is not None and self.key_allows(previous.stream, previous.key)
        if guarded and previous is not None and not self.same_publisher(attempt, previous):
            message = f"stream {attempt.stream} is reconnecting; only its publisher may resume it"
            return self.failed(attempt, Refusal("takeover", message), now)
        return None

    def same_publisher(self, attempt: PublishAttempt, previous: PublishAttempt) -> bool:
        if not hmac.compare_digest(key_digest(attempt.key), key_digest(previous.key)):
            return False
        return not self.shared_credentials(attempt) or attempt.remote == previous.remote

    def failed(self, attempt: PublishAttempt, refusal: Refusal, now: float) -> Refusal:
        """Count a refused attempt against its address; returns `refusal`."""
        entry = self._entry(attempt.remote, now)
        entry.count += 1
        if entry.count == self.config.max_failed_publishes:
            log.warning(
                "publish: %d refused attempts from %s within %g s; further attempts are refused without "
                "checking until the window has passed",
                entry.count,
                attempt.remote,
                self.config.failed_publish_window,
            )
        return refusal

    def _blocked(self, remote: str, now: float) -> Refusal | None:
        entry = self._failures.get(remote)
        if entry is None or now - entry.window_start >= self.config.failed_publish_window:
            return None
        if entry.count < self.config.max_failed_publishes:
            return None
        before, entry.refused = entry.refused, entry.refused + 1
        if worth_logging(before, entry.refused):
            log.warning(
                "publish from %s refused: too many failed attempts (%d refused at once in this window)",
                remote,
                entry.refused,
            )
        return Refusal("rate_limited", "too many failed publish attempts; try again later")

    def _entry(self, remote: str, now: float) -> _Failures:
        entry = self._failures.get(remote)
        if entry is not None and now - entry.window_start < self.config.failed_publish_window:
            return entry
        self._failures.pop(remote, None)
        if len(self._failures) >= MAX_TRACKED_ADDRESSES:
            self._forget_expired(now)
            while len(self._failures) >= MAX_TRACKED_ADDRESSES:
                del self._failures[next(iter(self._failures))]  # the oldest window goes first
        entry = self._failures[remote] = _Failures(now)
        return entry

    def _forget_expired(self, now: float) -> None:
        window = self.config.failed_publish_window
        for remote in [r for r, e in self._failures.items() if now - e.window_start >= window]:
            del self._failures[remote]

    @property
    def tracked_addresses(self) -> int:
        return len(self._failures)

"""The `[chat]` section: defaults, the reason for each, and checks (PluginError on a bad value)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediacore.plugins.api import PluginError


@dataclass(slots=True)
class ChatSettings:
    redis_url: str = ""
    """Redis that every node of a room attaches to (`redis://host:6379/0`); empty: rooms live in
    this process only."""
    redis_prefix: str = "mediacore:chat:"
    """Prefix of every Redis key of the chat (a hash tag such as `{chat}:` for Redis Cluster)."""
    guests_may_write: bool = False
    """Whether connections without a token may chat, like and send gifts (they always read)."""
    max_text: int = 500
    """Characters of one chat message; longer is refused with `too_long` (never truncated)."""
    rate_messages: int = 20
    """Chat messages one viewer may send per `rate_window` (token bucket, across nodes)."""
    moderator_rate_messages: int = 100
    """The same for moderators, hosts and admins."""
    rate_window: float = 30.0
    """Seconds over which `rate_messages` refill."""
    duplicate_window: float = 30.0
    """Seconds during which the same user sending the same text again is refused (`duplicate`)."""
    history_keep: int = 2000
    """Events kept per room for history and `?since=` replay (older ones are trimmed)."""
    send_queue: int = 256
    """Chat messages queued per connection; beyond it the oldest queued chat is shed (counted)."""
    urgent_queue: int = 1024
    """Gifts and moderation events queued per connection (never shed); a connection that lets
    more pile up is closed as too slow."""
    stall_timeout: float = 10.0
    """Seconds a connection may go without taking anything from a non-empty queue before it is
    closed as too slow."""
    max_frame: int = 4096
    """Bytes of one client frame (`max_msg_size`); larger closes the connection with 1009."""
    max_connections_per_address: int = 20
    """Chat connections one client address may hold at once (all rooms): a household or an office
    behind NAT fits; a flood from one address does not."""
    review_hook: str = ""
    """URL asked about each chat message (POST {room, user, text}; answer {"action": "allow"} /
    {"action": "deny"} / {"action": "replace", "text": ...}); empty: no review."""
    review_timeout: float = 1.0
    """Seconds the review hook may take before `review_fallback` decides."""
    review_fallback: str = "allow"
    """What an unanswered or failing review hook means: "allow" or "deny"."""

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> ChatSettings:
        settings = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise PluginError(f"unknown setting chat.{key}")
            current = getattr(settings, key)
            if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(current, bool) != isinstance(value, bool) or not isinstance(value, type(current)):
                raise PluginError(f"chat.{key} must be {type(current).__name__}")
            setattr(settings, key, value)
        settings.check()
        return settings

    def check(self) -> None:
        for name in ("max_text", "rate_messages", "moderator_rate_messages", "history_keep", "send_queue"):
            if getattr(self, name) < 1:
                raise PluginError(f"chat.{name} must be at least 1")
        for name in ("urgent_queue", "max_frame", "max_connections_per_address"):
            if getattr(self, name) < 1:
                raise PluginError(f"chat.{name} must be at least 1")
        for name in ("rate_window", "stall_timeout", "review_timeout"):
            if getattr(self, name) <= 0:
                raise PluginError(f"chat.{name} must be positive")
        if self.duplicate_window < 0:
            raise PluginError("chat.duplicate_window must not be negative")
        if self.review_fallback not in ("allow", "deny"):
            raise PluginError('chat.review_fallback must be "allow" or "deny"')
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise PluginError("chat.redis_url must be a redis://, rediss:// or unix:// URL")
        if self.review_hook and not self.review_hook.startswith(("http://", "https://")):
            raise PluginError("chat.review_hook must be an http:// or https:// URL")

"""Every bound of the chat plugin, named once, with the reason for it. Those an operator may
want to change are defaults of `[chat]` settings (plugins/chat/settings.py); these are not."""

from __future__ import annotations

HISTORY_ON_JOIN = 50
"""Messages a client gets in `history` when it joins: a screenful, enough to follow along."""

HISTORY_SCAN = 500
"""Room events read backwards to find the last HISTORY_ON_JOIN visible messages (deletes and
moderation events in between are skipped): bounds the work of one join."""

REPLAY_MAX = 1000
"""Events one `?since=SEQ` may replay; a client further behind gets `reset` and fresh history."""

MAX_GIFT_NAME = 64
"""Characters of a gift's name (`rose`, `rocket`): names come from a catalogue, not prose."""

MAX_GIFT_VALUE = 1_000_000
"""Largest value of one gift, in the shop's smallest unit: refuses absurd numbers early."""

MAX_LIKES_PER_FRAME = 50
"""Likes one `like` frame may carry: a client batches taps, it does not mint likes."""

MAX_USER_NAME = 128
"""Characters of a user id named in `ban`: ids are JWT `sub`s, never prose."""

MAX_MESSAGE_ID = 64
"""Characters of a message id in `delete` / `pin` (ours are 16 hex characters)."""

MAX_BAN_SECONDS = 10 * 365 * 86400
"""Longest timed ban (ten years); a ban without `seconds` is permanent."""

MAX_SLOW_MODE_SECONDS = 3600
"""Longest slow-mode gap: an hour between messages is already a closed chat."""

TICK_SECONDS = 0.1
"""Interval of the likes / viewers aggregation: at most 10 updates per second per room reach a
client, whatever the crowd taps; totals are exact (the last update carries the sum)."""

STATE_CLASS_DEPTH = 1
"""Likes and viewer counts queue as one coalesced slot each per connection (latest total wins)."""

BUS_RETRY_MIN = 0.1
"""Seconds before a node's first reconnect attempt to Redis; doubled per failure."""

BUS_RETRY_MAX = 1.0
"""Longest pause between reconnect attempts to Redis: a restarted server is found within a
second."""

BUS_BLOCK_MS = 1000
"""Milliseconds one XREAD BLOCK waits: bounds how long a stopping node waits for its readers."""

VIEWER_STALE = 5.0
"""Seconds after which another node's viewer count, not refreshed, no longer counts (a node that
died)."""

CLOSE_TIMEOUT = 1.0
"""Seconds the server waits for a client to answer its close frame before closing the socket
(the socket still flushes the close frame to a client that reads late)."""

SOCKET_SEND_BUFFER = 64 * 1024
"""Bytes of the kernel send buffer of a chat socket: small, so a slow client's backlog stays in
our priority queue (where a gift overtakes chat and chat is shed) rather than in the kernel's
FIFO, and slowness is seen early."""

DUPLICATE_MEMORY = 8
"""Recent texts remembered per user for duplicate suppression."""

ROOM_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
"""A room is a stream name: the characters that are safe in a Redis key and a URL path."""

HEARTBEAT = 30.0
"""Seconds between WebSocket pings: a client gone without a close is noticed within two."""

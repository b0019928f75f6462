"""Every bound of the audience plugin, named once with the reason it exists."""

from __future__ import annotations

MAX_ID_LENGTH = 64
"""Characters of an event, stream or product id ([A-Za-z0-9_.:-]): a UUID or a shop's SKU."""

MAX_EVENTS_PER_POST = 100
"""Events in one POST: a player batches what it saw over a few seconds."""

MAX_WATCH_SECONDS = 24 * 3600.0
"""Longest watch duration accepted: a day; longer is a clock error, not a viewer."""

MAX_VALUE = 1_000_000_000.0
"""Largest value of an event (minor units of an order or a gift, or a coupon's percent)."""

CLOCK_SKEW = 300.0
"""Seconds an event's own `ts` may lie ahead of the server's clock; further is refused."""

OPEN_WATCHES = 100_000
"""Viewers (from the engine's joined / left hooks) whose watch start is remembered to turn
the leave into a watch_stop with a duration; the oldest is forgotten beyond it."""

RECENT_IDS = 200_000
"""Event ids the recommender remembers to ignore a redelivered event (at-least-once Redis)."""

MAX_USERS = 500_000
"""Users the recommender holds; events of further users count only toward popularity."""

MAX_ITEMS = 50_000
"""Streams or products (each) the recommender holds: far above a live catalogue on air."""

TOP_N = 50
"""Recommendations precomputed per user and kind at each refresh; a request takes n ≤ TOP_N."""

NEIGHBOURS = 50
"""Most similar users kept per user by user-based CF (the rest add noise and cost)."""

USER_CHUNK = 512
"""Users scored per matrix product at a refresh: bounds the dense scratch to
USER_CHUNK × items floats."""

PURGE_INTERVAL = 3600.0
"""Seconds between deletions of events older than the retention window."""

REDIS_BATCH = 256
"""Stream entries read per XREADGROUP / XREAD call."""

REDIS_BLOCK_MS = 1000
"""Milliseconds a Redis read blocks waiting for entries: the consumer's poll period."""

STREAM_MAXLEN = 1_000_000
"""Entries kept (approximately) in each Redis stream; the canonical log holds the rest."""

CLAIM_IDLE_MS = 60_000
"""Milliseconds an entry may stay pending with a consumer (a node that died) before another
node claims it."""

SINK_RETRIES = 5
"""Attempts to store one batch before its events are counted as failed and dropped."""

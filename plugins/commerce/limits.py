"""Every bound of the commerce store, named once with the reason it exists.

The store checks each argument against these before it reads or writes anything, so bad
input is refused with `InvalidRequest` and leaves no trace."""

from __future__ import annotations

MAX_QUANTITY = 100
"""Units in one order: a tap buys one or a few, bulk buyers a case; 100 keeps a wrong or
hostile quantity from emptying a flash sale in one request."""

MAX_PRICE = 1_000_000_000
"""Largest unit price in minor units (10 million in a two-decimal currency). With
MAX_QUANTITY it keeps every total below 2**53, exact in Redis' Lua numbers (doubles)."""

MAX_STOCK = 1_000_000_000
"""Largest stock of a product or sale: far beyond any live sale, small enough that stock
arithmetic stays exact in Lua numbers."""

MAX_PER_USER_LIMIT = MAX_QUANTITY * 100
"""Largest per-user limit of a sale; a sale without a meaningful limit uses this."""

MAX_ID_LENGTH = 64
"""Characters of a product, sale or order id ([A-Za-z0-9_.-]): room for a shop's SKU or a
UUID, short enough for a URL path segment and a Redis key."""

MAX_USER_LENGTH = 255
"""Characters of a user id (the JWT `sub`): identity providers use UUIDs or e-mail
addresses; RFC 5321 caps an address at 254."""

IDEMPOTENCY_KEY_MAX_LENGTH = 255
"""Characters of an `Idempotency-Key` (printable ASCII, as a header value carries): a UUID
needs 36; 255 is the customary cap of payment APIs."""

MAX_FINGERPRINT_LENGTH = 128
"""Characters of a request fingerprint: a SHA-256 hex digest (64) with room for a prefix."""

IDEMPOTENCY_RETENTION = 24 * 3600.0
"""Seconds a completed key is kept and replayed: the issue asks for at least 24 h, the window
in which a client retries a tap (app resumed, network back)."""

IDEMPOTENCY_LEASE = 30.0
"""Seconds a claimed key stays `in_progress` when its request never completes (crash, lost
connection). A purchase takes milliseconds, seconds under a flash-sale burst; after the
lease a retry with the same key may claim it again instead of waiting 24 h."""

IN_PROGRESS_RETRY_AFTER = 1
"""Seconds a client is told to wait (Retry-After) when its key is still in flight: a
purchase normally finishes well within it."""

MAX_COUPON_CODE_LENGTH = 64
"""Characters of a coupon code ([A-Za-z0-9_-]): codes are typed or read out by a host, so
they are short; 64 leaves room for generated ones."""

MAX_COUPON_USES = 100_000_000
"""Largest max_uses of a multi-use coupon: beyond any audience, still exact in Lua."""

MAX_PERCENT = 100
"""A percent coupon takes 1..100 percent off."""

MAX_TITLE_LENGTH = 200
"""Characters of a product title: what a product card shows in one or two lines."""

MAX_IMAGE_URL_LENGTH = 2048
"""Characters of a product image URL: the practical URL length browsers and CDNs accept."""

MAX_PAGE = 100
"""Products or orders returned by one listing call."""

MAX_TIME = 253402300799.0
"""Latest time accepted (9999-12-31T23:59:59Z, seconds since the epoch): sale windows and
coupon expiries beyond it are typing errors."""

OUTBOX_BATCH = 100
"""Outbox entries fetched per round of the webhook deliverer."""

MAX_CARD_BYTES = 1024
"""Bytes of a product card's attributes as written in the playlist: every playlist of the
window repeats each card, so cards stay small (IVS allows 1 KB); a long title is shortened
and an image URL that does not fit is left out."""

MAX_STATS_PRODUCTS_SHOWN = 100
"""Products listed by one `/stats` answer, most impressions first."""

LAST_CARD_STREAMS = 10_000
"""Products remembered with the stream that last showed their card (an order without a
`stream` is counted for it): bounded like every per-id table."""

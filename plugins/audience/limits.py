"""Every bound of the audience plugin, named once with the reason it exists."""

from __future__ import annotations

MAX_ID_LENGTH = 64
"""Characters of an event, stream or product id ([A-Za-z0-9_.:-]): a UUID or a shop's SKU."""

MAX_EVENTS_PER_POST = 100
"""Events in one POST: a player batches what it saw over a few seconds."""

SOCKET_HEARTBEAT = 30.0
"""Seconds between pings on an events WebSocket: a page that vanished without closing is
noticed (and its socket freed) within two of them."""

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

# CTR and conversion models (conversion.py, logistic.py) ------------------------------------------
L2 = 1e-3
"""L2 penalty on the standardised weights of the logistic models (per row of the mean
log-loss): enough to keep Newton's method stable on collinear features, too small to bias
the fit on thousands of impressions."""

PLATT_L2 = 1e-4
"""L2 penalty of the two Platt calibration parameters."""

NEWTON_STEPS = 25
"""Newton (IRLS) iterations at most; a logistic fit converges in well under ten."""

NEWTON_TOLERANCE = 1e-7
"""Largest weight change that ends the Newton iterations."""

MIN_RATE = 1e-6
"""Probabilities are clipped to [MIN_RATE, 1 - MIN_RATE] in the log-loss and constant models."""

ATTRIBUTION_WINDOW = 1800.0
"""Seconds after a card impression within which the same user's click (and then order) of
that product counts as the impression's outcome."""

PRIOR_WEIGHT = 20.0
"""Pseudo-impressions (pseudo-clicks) at the global rate added to a product's or a user's own
counts: a rate from three impressions is mostly the prior."""

CALIBRATION_FRACTION = 0.2
"""Newest share of the training impressions held out to fit the Platt calibration."""

MAX_TRAIN_IMPRESSIONS = 500_000
"""Newest card impressions a retrain fits on: bounds its memory and time (Newton on ~15
features is linear in the rows)."""

MIN_TRAIN_POSITIVES = 20
"""Clicks (purchases after a click) needed before a model is fitted; below it the models
answer the prior rate."""

SIMILAR_STREAMS = 50
"""Most similar streams kept per stream for the viewer-stream affinity feature."""

# Segments and basket rules (segments.py) ----------------------------------------------------------
K_RANGE = (2, 10)
"""K-means is run for every k in this range (inclusive); the k with the best silhouette wins."""

KMEANS_ITERATIONS = 100
"""Lloyd iterations at most per k-means run (it stops when no point changes cluster)."""

SILHOUETTE_SAMPLE = 2000
"""Users the silhouette is computed on (a seeded sample): it is quadratic in them."""

TASTE_FACTORS = 8
"""Components of the truncated SVD of the users × streams matrix used as category features."""

MAX_SEGMENT_USERS = 200_000
"""Most active users clustered; the rest get the nearest centroid."""

BASKET_WINDOW = 86400.0
"""Orders of one user within this many seconds of the basket's first order form one basket."""

MIN_PAIR_BASKETS = 3
"""Support threshold of a "bought together" pair: baskets holding both products, at least."""

MIN_CONFIDENCE = 0.05
"""Confidence threshold of a rule A → B: share of the baskets with A that also hold B."""

MAX_BASKET_ITEMS = 50
"""Distinct products of one basket counted for pairs (a reseller's cart would be quadratic)."""

# Promotion planner (planner.py) -------------------------------------------------------------------
MAX_PLAN_OPTIONS = 50
"""Candidate discounts in one plan request."""

MIN_COUPON_HISTORY = 30
"""Coupons shown to a segment before its own uptake curve is fitted; below it the
proportional model answers."""

KMEANS_RESTARTS = 4
"""K-means++ runs per k (different seeds); the one with the least inertia is kept: one run
can settle in a poor local optimum."""

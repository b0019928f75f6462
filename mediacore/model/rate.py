"""A token bucket: how many events a peer may cause per second, with a short burst, sans-I/O."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second refill a bucket of `burst` tokens; each event takes one.

    Time is passed in (`now`, monotonic seconds), so the bucket never reads a clock: the
    first `take()` finds the bucket full, and a caller that never advances `now` gets the
    burst and nothing more. A rate of 0 or less disables the bound.
    """

    __slots__ = ("rate", "burst", "_tokens", "_last")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._last: float | None = None

    def take(self, now: float) -> bool:
        """Take one token at time `now`; False when the bucket is empty (the event is over
        the bound)."""
        if self.rate <= 0:
            return True
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

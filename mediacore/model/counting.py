"""When a growing count of bad events deserves another log line."""

from __future__ import annotations


def worth_logging(before: int, count: int) -> bool:
    """Whether a count that rose from `before` to `count` passed a mark worth a log line: each
    of the first ten, then the 16th, 32nd, 64th...: a hostile or broken peer cannot flood the
    log, and an operator still sees it go on."""
    return count > before and (before < 10 or count.bit_length() > before.bit_length())

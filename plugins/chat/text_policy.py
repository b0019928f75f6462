"""Text moderation behind one small interface: `Moderator.check(text) -> Verdict`.

The word filter (NFKC + confusables, word boundaries) and the masking of phone numbers and
e-mail addresses live in `plugins/chat/moderation.py`, which exposes
`moderate(text) -> ModerationResult(text, blocked, reason)`. `load_moderator()` uses it when
that module is present; otherwise this module's stand-in applies, which only normalises
whitespace. Either way the length cap is checked first (`too_long`, never truncated), so a
moderator that masks (and so lengthens) text cannot push a message past it unnoticed.
"""

from __future__ import annotations

import importlib
import logging
import unicodedata
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("plugins.chat")

MODERATION_MODULE = "plugins.chat.moderation"
"""Where the word filter lives; imported when present."""


@dataclass(slots=True, frozen=True)
class Verdict:
    allowed: bool
    text: str
    """The text to publish (masked, normalised) when allowed."""
    reason: str | None = None


class Moderator(Protocol):
    def check(self, text: str) -> Verdict: ...


def normalise(text: str) -> str:
    """Whitespace runs (tabs, newlines, odd spaces) become one space; ends trimmed; control
    characters dropped."""
    kept = "".join(c for c in text if c.isspace() or unicodedata.category(c)[0] != "C")
    return " ".join(kept.split())


class StandIn:
    """Whitespace normalisation only: the policy until the word filter is installed."""

    def check(self, text: str) -> Verdict:
        cleaned = normalise(text)
        if not cleaned:
            return Verdict(False, "", "empty")
        return Verdict(True, cleaned)


class ModerationAdapter:
    """`moderation.moderate(text) -> ModerationResult(text, blocked, reason)` as a Moderator."""

    def __init__(self, moderate: Any) -> None:
        self._moderate = moderate

    def check(self, text: str) -> Verdict:
        cleaned = normalise(text)
        if not cleaned:
            return Verdict(False, "", "empty")
        result = self._moderate(cleaned)
        if result.blocked:
            return Verdict(False, cleaned, result.reason or "blocked")
        return Verdict(True, normalise(result.text), result.reason)


def load_moderator() -> Moderator:
    try:
        module = importlib.import_module(MODERATION_MODULE)
    except ModuleNotFoundError as e:
        if e.name != MODERATION_MODULE:
            raise
        log.info("chat: %s not installed, using the whitespace-only stand-in", MODERATION_MODULE)
        return StandIn()
    return ModerationAdapter(module.moderate)


def over_cap(text: str, max_text: int) -> bool:
    """The cap counts characters (code points) of the text as sent, after trimming its ends."""
    return len(text.strip()) > max_text

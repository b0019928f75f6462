"""Text moderation behind one small interface: `Moderator.check(text) -> Verdict`.

The rules live in `plugins/chat/moderation.py` (`moderate(text) -> ModerationResult`: the
word filter with NFKC + confusables on word boundaries, phone numbers and e-mail addresses
masked); this module normalises whitespace around it and turns its result into a Verdict.
The length cap is checked before (`too_long`, never truncated), so a moderator that masks
(and so lengthens) text cannot push a message past it unnoticed.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Protocol

from .moderation import MAX_TEXT_LENGTH, WordList, moderate


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


class WordFilter:
    """The chat's Moderator: whitespace normalised, then `moderation.moderate`."""

    def __init__(self, words: WordList | None = None, max_length: int = MAX_TEXT_LENGTH) -> None:
        self.words = words
        self.max_length = max_length

    def check(self, text: str) -> Verdict:
        cleaned = normalise(text)
        if not cleaned:
            return Verdict(False, "", "empty")
        result = moderate(cleaned, self.words, self.max_length)
        if result.blocked:
            return Verdict(False, cleaned, result.reason or "blocked")
        return Verdict(True, normalise(result.text), result.reason)


def over_cap(text: str, max_text: int) -> bool:
    """The cap counts characters (code points) of the text as sent, after trimming its ends."""
    return len(text.strip()) > max_text

"""The chat's moderation (plugins/chat/moderation.py) against its corpora in
tests/data/moderation/: ordinary live-shopping chat in many languages that must pass
untouched (the Scunthorpe problem), evasions of listed words that must all be blocked, and
masking cases with the exact text the room sees. Hypothesis checks that folding is
idempotent, that moderate() never raises, and that the work per input character is bounded
on adversarial inputs, counted in executed Python instructions (not in seconds)."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.chat.moderation import (
    MAX_TEXT_LENGTH,
    REASON_MASKED,
    REASON_TOO_LONG,
    REASON_WORD,
    ModerationResult,
    WordList,
    WordListError,
    fold,
    mask,
    moderate,
)

DATA = Path(__file__).parent / "data" / "moderation"
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})")


def unescape(line: str) -> str:
    """Corpus lines write invisible characters as \\uXXXX (or \\UXXXXXXXX)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), line)


def corpus(name: str) -> list[str]:
    """Non-blank lines of a corpus file, escapes decoded (messages may start with '#')."""
    return [unescape(line) for line in (DATA / name).read_text("utf-8").splitlines() if line.strip()]


def masking_cases() -> list[tuple[str, str]]:
    cases = []
    for line in (DATA / "masking.txt").read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            given_text, expected = line.split(" => ")
            cases.append((unescape(given_text), unescape(expected)))
    return cases


CLEAN = corpus("clean.txt")
EVASIONS = corpus("evasions.txt")
MASKING = masking_cases()


def test_the_corpora_are_as_large_as_promised() -> None:
    assert len(CLEAN) >= 150 and len(set(CLEAN)) == len(CLEAN)
    assert len(EVASIONS) >= 80 and len(set(EVASIONS)) == len(EVASIONS)
    assert len(MASKING) >= 60
    assert all(len(line) <= MAX_TEXT_LENGTH for line in CLEAN + EVASIONS)


def test_clean_corpus_has_no_false_positive() -> None:
    """Ordinary chat, including words that contain listed words (Scunthorpe, class,
    cocktail, therapist, shitake, niggardly...), numbers that are not phone numbers and
    eleven scripts: nothing blocked, nothing masked, every text unchanged."""
    wrong = [(line, result) for line in CLEAN if (result := moderate(line)) != ModerationResult(line, False, None)]
    assert wrong == [], f"{len(wrong)} of {len(CLEAN)} clean lines flagged"


def test_every_evasion_is_blocked() -> None:
    missed = [line for line in EVASIONS if moderate(line) != ModerationResult(line, True, REASON_WORD)]
    assert missed == [], f"{len(missed)} of {len(EVASIONS)} evasions got through"


def test_evasions_are_blocked_inside_a_sentence() -> None:
    missed = [line for line in EVASIONS if not moderate(f"hey host, {line}!! lol").blocked]
    assert missed == []


@pytest.mark.parametrize(("text", "expected"), MASKING, ids=[c[0][:40] for c in MASKING])
def test_masking(text: str, expected: str) -> None:
    result = moderate(text)
    assert result == ModerationResult(expected, False, REASON_MASKED if expected != text else None)


@pytest.mark.parametrize(
    "text",
    ["grape juice", "my therapist", "the drapes", "rapeseed oil", "Scunthorpe", "class", "assassin", "cocktail"],
)
def test_word_boundaries_spare_words_that_contain_a_listed_word(text: str) -> None:
    words = WordList.from_lines(["rape", "cunt*", "ass", "cock"])
    assert not moderate(text, words).blocked
    assert moderate("rape", words).blocked and moderate("r 4 p e", words).blocked


def test_decisions_of_the_default_list() -> None:
    """The collisions docs/chat-moderation.md decides: whole words, word starts, stems."""
    spared = ["shitake", "Matsushita", "peacock", "Hancock", "niggardly", "snigger", "dickens", "Galaxy A55", "f*ck"]
    assert [w for w in spared if moderate(w).blocked] == []
    caught = ["shitty", "bitches", "cunty", "motherfucker", "fuckface", "assholes", "niggers"]
    assert [w for w in caught if not moderate(w).blocked] == []
    not_caught = ["fu ck", "sh it", "f**k", "a55"]  # documented limits
    assert [w for w in not_caught if moderate(w).blocked] == []


def test_fold_rules() -> None:
    assert fold("ＦＵＣＫ") == "fuck"  # NFKC: fullwidth
    assert fold("𝐟𝐮𝐜𝐤") == "fuck"  # NFKC: mathematical alphanumerics
    assert fold("Café Straße") == "cafe strasse"  # marks removed, casefold
    assert fold("f\u200bu\u200dc\u2060k\u00ad") == "fuck"  # format characters removed
    assert fold("ѕһіт") == "shit"  # Cyrillic look-alikes
    assert fold("sh1t $hit @ss") == "shit shit ass"  # leetspeak inside words
    assert fold("wow! 10:30 $19.99 #12345 @55") == "wow! 10:30 $19.99 #12345 @55"  # numbers stay
    assert fold("Galaxy A55, RTX4090") == "galaxy a55, rtx4090"  # model numbers stay
    assert fold("fuuuuck, sooo good, ass") == "fuuck, soo good, ass"  # runs cut to two
    assert fold("한국어 日本語 ไทย") == "한국어 日本語 ไทย"  # other scripts keep their letters


def test_too_long_is_refused_before_any_work() -> None:
    assert moderate("a" * MAX_TEXT_LENGTH) == ModerationResult("a" * MAX_TEXT_LENGTH, False, None)
    long = "call 0912 345 678 " * 40
    assert moderate(long) == ModerationResult(long, True, REASON_TOO_LONG)


def test_result_is_frozen_and_blocked_text_is_the_input() -> None:
    result = moderate("you sh1t, call 0912 345 678")
    assert result == ModerationResult("you sh1t, call 0912 345 678", True, REASON_WORD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "x"  # type: ignore[misc]
    assert mask("call 0912 345 678 or a@b.io") == ("call [phone] or [email]", 2)


def test_word_list_from_lines() -> None:
    words = WordList.from_lines(["# comment", "", "  Gadget  ", "widg*", "*zork*", "ＢＬＯＢ"])
    assert words.entries == ("Gadget", "widg*", "*zork*", "ＢＬＯＢ") and len(words) == 4
    assert moderate("nice g a d g e t", words).blocked
    assert moderate("widgets!", words).blocked and not moderate("a widow", words).blocked
    assert moderate("megazorkian", words).blocked and moderate("bl0b", words).blocked
    assert not moderate("gadgetry", words).blocked  # a whole-word entry
    assert not moderate("fuck", words).blocked  # a list of one's own replaces the default
    for bad in ["two words", "*lead", "x", "*", "a.b"]:
        with pytest.raises(WordListError):
            WordList.from_lines([bad])


def test_default_list_blocks_each_of_its_entries() -> None:
    words = WordList.default()
    assert len(words) >= 30 and WordList.default() is words
    missed = [entry for entry in words.entries if not moderate(entry.strip("*")).blocked]
    assert missed == []


# --- hypothesis -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fold_is_idempotent(text: str) -> None:
    once = fold(text)
    assert fold(once) == once


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=MAX_TEXT_LENGTH + 20), st.sampled_from(CLEAN + EVASIONS)))
def test_moderate_never_raises(text: str) -> None:
    result = moderate(text)
    assert isinstance(result, ModerationResult)
    if result.blocked:
        assert result.text == text and result.reason in {REASON_WORD, REASON_TOO_LONG}
    else:
        assert result.reason in {None, REASON_MASKED} and (result.text == text) == (result.reason is None)


def count_instructions(function: Callable[..., Any], *args: Any) -> int:
    """Python bytecode instructions executed by function(*args), counted with an opcode
    tracer: a measure of work that does not depend on the machine or its load."""
    count = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            count += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        function(*args)
    finally:
        sys.settrace(previous)
    return count


INSTRUCTIONS_PER_CHARACTER = 600
"""Bound on the Python instructions moderate() executes per character, of the input or of
its NFKC form when longer (NFKC expands a character at most 18-fold, U+FDFA). Ordinary chat
costs about 200 (short lines up to 630, the fixed cost spread over few characters), the
adversarial shapes below up to 480; quadratic work on 500 characters would need thousands."""

FIXED_INSTRUCTIONS = 20_000
"""Instructions of one call regardless of length (the word list's entries, the result)."""


def work_bound(text: str) -> int:
    return INSTRUCTIONS_PER_CHARACTER * max(len(text), len(fold(text))) + FIXED_INSTRUCTIONS


ADVERSARIAL = st.one_of(
    st.text(alphabet="ab .-@()+1\u200b", min_size=MAX_TEXT_LENGTH - 50, max_size=MAX_TEXT_LENGTH),
    st.text(alphabet=st.sampled_from(["f", "u", "c", "k", " ", ".", "s", "1", "$", "!", "\u0301"]), min_size=400),
    st.lists(st.sampled_from(["at", "dot", " ", "(", ")", "[", "]", "com", "@", ".", "a", "-", "0"]), min_size=200).map(
        "".join
    ),
    st.lists(st.sampled_from(["0", "12", "345", " ", "-", ".", "(", ")", "+", "#", "$", "/"]), min_size=250).map(
        "".join
    ),
    st.text(min_size=MAX_TEXT_LENGTH - 20, max_size=MAX_TEXT_LENGTH),
    st.sampled_from(["\ufdfa" * MAX_TEXT_LENGTH, "a " * 250, "a@" * 250, "1 " * 250, "a." * 250, "f" * 500]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ADVERSARIAL.map(lambda s: s[:MAX_TEXT_LENGTH]))
def test_work_per_character_is_bounded(text: str) -> None:
    instructions = count_instructions(moderate, text)
    assert instructions <= work_bound(text), (len(text), instructions)


@pytest.mark.parametrize(
    "unit", ["a ", "a@", "1 ", "a.", "1-", "at dot ", "( 1 ) ", "f u c k ", "\ufdfa", "x", "s\u0301h\u200b1 "]
)
def test_doubling_the_input_doubles_the_work(unit: str) -> None:
    """Linear, not just bounded: twice the text costs about twice the instructions."""
    half = unit * (MAX_TEXT_LENGTH // 2 // len(unit))
    once, twice = count_instructions(moderate, half), count_instructions(moderate, half + half)
    assert twice <= 2.2 * once, (once, twice)

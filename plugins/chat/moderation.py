"""Chat moderation: a word filter that sees through evasions without the Scunthorpe problem,
and masking of phone numbers and e-mail addresses in public messages. Pure and sans-I/O:
text in, a `ModerationResult` out; no clock, no network, no state besides the word list.

    moderate(text, words=None) -> ModerationResult(text, blocked, reason)

1. A text longer than `MAX_TEXT_LENGTH` is refused (blocked, reason "too_long") before any
   normalisation or pattern work, so the work per message is bounded.
2. The text is folded (`fold`) and split into words; a word, or a run of words an evader
   split apart, that matches an entry of the word list blocks the message (reason "word";
   `text` is the input unchanged, for the moderators' log, never for the room).
3. Otherwise e-mail addresses become `MASK_EMAIL` and phone numbers `MASK_PHONE` in the
   original text (reason "masked" when anything was masked, else None).

Folding (`fold`), in this order, each step documented where it is written:
NFKC (fullwidth, mathematical alphanumerics, circled and superscript letters, ligatures),
casefold, combining marks, enclosing marks and format characters (zero-width joiners and
spaces, soft hyphen, bidi controls) removed after NFD, look-alike letters mapped to Latin
(`_CONFUSABLES`: Cyrillic, Greek, small capitals, regional indicators, a few stroked
letters), leetspeak inside words (`_LEET`), runs of three or more equal letters cut to two.

Matching (`WordList`): on word boundaries of the folded text; `l` and `i` count as one
letter (`1`, `|`, `I` all stand in for both); every letter of an entry may repeat. Besides
each word, two kinds of joined words are tried: words glued by short punctuation without
spaces ("sh.it", "f-u-c-k") and runs of single letters with short separators, spaces
included ("f u c k", "f . u . c . k"). Two multi-letter fragments split by a space
("fu ck") are ordinary text and are not joined.

Linear time: the only regular expressions are runs of one character class (or of a
two-way alternation of disjoint single characters) and a back-reference of one character;
none can backtrack more than a character. Everything else is one left-to-right pass over
the words or tokens with bounded look-around. `tests/test_chat_moderation.py` counts the
Python instructions executed per input character on adversarial inputs.

docs/chat-moderation.md has the rules with examples, what is and is not caught, and how to
extend the word list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

MAX_TEXT_LENGTH = 500
"""Characters moderate() examines at most: the chat's message cap (the chat answers a longer
message with an error before moderating it). Longer input is refused before any work, so
a message costs at most this much normalising and scanning."""

MAX_SEPARATOR = 3
"""Characters between two pieces of a split word that still join them ("f . u . c . k" has
three); more is taken for ordinary spacing."""

PHONE_MIN_DIGITS = 7
"""Digits of the shortest phone number masked: a local number without area code (555-1234).
Shorter digit groups are prices, quantities, times, years and order numbers."""

PHONE_MAX_DIGITS = 15
"""Digits of the longest phone number masked: E.164 caps an international number at 15."""

EMAIL_MAX_LOCAL = 64
"""Characters of an address' local part (RFC 5321); a longer run is not taken for one."""

EMAIL_MAX_DOMAIN = 253
"""Characters of an address' domain (RFC 1035)."""

MASK_PHONE = "[phone]"
MASK_EMAIL = "[email]"

REASON_WORD = "word"
"""A listed word (or an evasion of one) is in the message."""
REASON_TOO_LONG = "too_long"
"""The message is longer than MAX_TEXT_LENGTH and was not examined."""
REASON_MASKED = "masked"
"""The message is allowed; phone numbers or e-mail addresses in it were masked."""


@dataclass(frozen=True, slots=True)
class ModerationResult:
    """What the room may see. `blocked`: do not publish (`reason` says why, `text` is the
    input unchanged). Not blocked: publish `text`, which has phone numbers and e-mail
    addresses masked (`reason` "masked") or is the input as it was (`reason` None)."""

    text: str
    blocked: bool
    reason: str | None


# ---------------------------------------------------------------------------------------
# Folding

_DROPPED_CATEGORIES = frozenset({"Mn", "Me", "Cf"})
"""Nonspacing and enclosing marks (accents, zalgo, combining overlays, variation selectors,
the combining grapheme joiner) and format characters (U+200B-U+200F, U+2060-U+2064,
U+FEFF, soft hyphen, bidi controls, tags): invisible or decorative, removed."""

_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
"""Hangul fillers and the blank braille pattern: letters or symbols by category, blank on
screen, used to split words invisibly."""

_SMALL_CAPITALS = "ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘꞯʀꜱᴛᴜᴠᴡʏᴢ"

_CONFUSABLES = str.maketrans(
    {
        # Cyrillic (lower case; casefold ran first) that reads as a Latin letter.
        "а": "a",
        "в": "b",
        "г": "r",
        "е": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "п": "n",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "ь": "b",
        "ѕ": "s",
        "і": "i",
        "ј": "j",
        "һ": "h",
        "ԁ": "d",
        "ԛ": "q",
        "ԝ": "w",
        "ӏ": "l",
        "ү": "y",
        "ѵ": "v",
        # Greek.
        "α": "a",
        "β": "b",
        "γ": "y",
        "ε": "e",
        "ζ": "z",
        "η": "n",
        "ι": "i",
        "κ": "k",
        "μ": "u",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "ω": "w",
        "ϲ": "c",
        # Latin letters with a stroke or without a dot (NFD does not split them).
        "ı": "i",
        "ȷ": "j",
        "ł": "l",
        "đ": "d",
        "ø": "o",
        "ħ": "h",
        "ŧ": "t",
        "ƒ": "f",
        "ɑ": "a",
        "ɡ": "g",
        # Small capitals (not folded by NFKC) and regional indicator symbols (flag letters).
        **{c: chr(ord("a") + i) for i, c in enumerate(_SMALL_CAPITALS)},
        **{chr(0x1F1E6 + i): chr(ord("a") + i) for i in range(26)},
    }
)
"""Look-alikes mapped to the Latin letter they imitate: a small explicit table (the common
substitutions of evaders), not the whole Unicode confusables data, so each mapping can be
read and argued. Applied to every word, also to Russian or Greek ones: folded text is only
ever compared with the word list, never shown."""

_LEET = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "9": "g",
        "@": "a",
        "$": "s",
        "!": "i",
        "|": "l",
    }
)
"""Leetspeak digits and symbols and the letter each stands for (`1` is `i` here; the matcher
takes `i` and `l` as one letter)."""

_LEET_TOKEN = re.compile(r"(?:[^\W_]|[$@!|])+")
"""A word as leetspeak writes it: letters, digits, `$ @ ! |` (one class: linear)."""

_EDGE_PUNCTUATION = "!|"
"""Leet symbols that are punctuation at a word's edge ("wow!"), letters only inside ("sh!t")."""

_MODEL_NUMBER = re.compile(r"[^\W\d_]+[0-9]{2,}")
"""Letters followed by two or more digits (A55, S24, RTX4090, iPhone15): a product model,
whose digits stay digits ("A55" is a phone, not "ass")."""

_REPEATS = re.compile(r"([^\W\d_])\1\1+")
"""Three or more equal letters; cut to two so that double letters survive ("ass", "fuuuck"
→ "fuuck"; the matcher lets any letter repeat)."""


def _fold_characters(text: str) -> str:
    """Character-level folding: NFKC, casefold, marks and format characters removed (after
    NFD, then recomposed with NFC so Hangul and other scripts keep their syllables),
    look-alikes mapped. Repeated until stable (casefold output is not always NFKC-stable);
    two rounds suffice in practice, four bound it."""
    for _ in range(4):
        s = unicodedata.normalize("NFKC", text).casefold()
        s = unicodedata.normalize("NFD", s)
        s = "".join(c for c in s if c not in _INVISIBLE_LETTERS and unicodedata.category(c) not in _DROPPED_CATEGORIES)
        s = unicodedata.normalize("NFC", s.translate(_CONFUSABLES))
        if s == text:
            break
        text = s
    return text


def _leet(token: str) -> str:
    """Leetspeak of one word mapped to letters: only in a word that has a letter (numbers,
    prices and "@55" stay as they are) and is not a model number; `!` and `|` only inside."""
    core = token.strip(_EDGE_PUNCTUATION)
    if not core or _MODEL_NUMBER.fullmatch(core) or not any(c.isalpha() for c in core):
        return token
    lead = len(token) - len(token.lstrip(_EDGE_PUNCTUATION))
    return token[:lead] + core.translate(_LEET) + token[lead + len(core) :]


def fold(text: str) -> str:
    """The text as the word filter compares it: NFKC, casefolded, without marks, format and
    invisible characters, look-alikes and leetspeak mapped to Latin letters, runs of three
    or more equal letters cut to two. Separators (spaces, punctuation) are kept; the
    matcher decides which split words to join. Idempotent: fold(fold(t)) == fold(t)."""
    s = _fold_characters(text)
    s = _LEET_TOKEN.sub(lambda m: _leet(m.group()), s)
    return _REPEATS.sub(r"\1\1", s)


# ---------------------------------------------------------------------------------------
# Word list and matching

_WORD = re.compile(r"[^\W_]+")
"""A word of folded text: a run of letters and digits (one class: linear)."""


def _runs(word: str) -> tuple[str, tuple[int, ...]]:
    """The word as (skeleton, run lengths), with `l` read as `i`: "hell" → ("hei", (1, 1, 2))."""
    skeleton: list[str] = []
    counts: list[int] = []
    for c in word.replace("l", "i"):
        if skeleton and skeleton[-1] == c:
            counts[-1] += 1
        else:
            skeleton.append(c)
            counts.append(1)
    return "".join(skeleton), tuple(counts)


def _covers(counts: tuple[int, ...], at: int, need: tuple[int, ...]) -> bool:
    """Each run of the word from `at` is at least as long as the entry's run."""
    return all(counts[at + i] >= n for i, n in enumerate(need))


def _occurrences(skeleton: str, part: str) -> Iterator[int]:
    at = skeleton.find(part)
    while at >= 0:
        yield at
        at = skeleton.find(part, at + 1)


class WordListError(ValueError):
    """A word-list line that is not an entry (the message names the line)."""


class WordList:
    """Entries the filter blocks, folded like messages. Build with `from_lines` or take the
    shipped list with `default()`. Immutable after construction; shareable."""

    __slots__ = ("_exact", "_prefix", "_inner", "entries")

    def __init__(self, entries: Iterable[str]) -> None:
        self._exact: dict[str, list[tuple[int, ...]]] = {}
        self._prefix: list[tuple[str, tuple[int, ...]]] = []
        self._inner: list[tuple[str, tuple[int, ...]]] = []
        kept: list[str] = []
        for number, raw in enumerate(entries, 1):
            entry = raw.strip()
            inner = entry.startswith("*") and entry.endswith("*") and len(entry) > 2
            prefix = not inner and entry.endswith("*")
            word = fold(entry.strip("*"))
            if entry.startswith("*") and not inner:
                raise WordListError(f"entry {number} {entry!r}: a leading '*' needs a trailing one (*word*)")
            if len(word) < 2 or not _WORD.fullmatch(word):
                raise WordListError(f"entry {number} {entry!r}: one word of two or more letters or digits")
            skeleton, counts = _runs(word)
            if inner:
                self._inner.append((skeleton, counts))
            elif prefix:
                self._prefix.append((skeleton, counts))
            else:
                self._exact.setdefault(skeleton, []).append(counts)
            kept.append(entry)
        self.entries: tuple[str, ...] = tuple(kept)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> WordList:
        """Entries from text lines: blank lines and lines starting with '#' are skipped;
        `word` is a whole word, `word*` a word start, `*word*` a stem anywhere in a word."""
        return cls(line for line in (raw.strip() for raw in lines) if line and not line.startswith("#"))

    @classmethod
    def default(cls) -> WordList:
        """The shipped list, `plugins/chat/moderation_words.txt` (loaded once)."""
        return _default_words()

    def __len__(self) -> int:
        return len(self.entries)

    def matches(self, word: str, *, anywhere: bool = False) -> bool:
        """Whether a folded word is (an evasion of) an entry: a whole-word entry equals the
        word, a `word*` entry starts it (or, with `anywhere`, occurs in it), a `*word*`
        entry occurs in it; every letter of the word may repeat more than in the entry."""
        skeleton, counts = _runs(word)
        if any(_covers(counts, 0, need) for need in self._exact.get(skeleton, ())):
            return True
        for part, need in self._prefix:
            if anywhere:
                if any(_covers(counts, at, need) for at in _occurrences(skeleton, part)):
                    return True
            elif skeleton.startswith(part) and _covers(counts, 0, need):
                return True
        return any(_covers(counts, at, need) for part, need in self._inner for at in _occurrences(skeleton, part))


@cache
def _default_words() -> WordList:
    text = resources.files(__package__ or "plugins.chat").joinpath("moderation_words.txt").read_text("utf-8")
    return WordList.from_lines(text.splitlines())


def _joined_words(folded: str) -> Iterator[tuple[str, bool]]:
    """Every word of the folded text, then every word an evader split: (word, anywhere).

    Glued: words separated only by up to MAX_SEPARATOR characters of punctuation without
    whitespace ("sh.it", "f-u-c-k", "fu_ck"). Spelled: runs of two or more single letters
    or digits separated by up to MAX_SEPARATOR characters of anything ("f u c k",
    "f . u . c . k", "5 h 1 t"); in those, `word*` entries may match anywhere, because the
    letters before the evasion ("a f u c k i n g") belong to it only by accident."""
    glued: list[str] = []
    spelled: list[str] = []
    previous_end = -1
    for match in _WORD.finditer(folded):
        word = match.group()
        yield word, False
        separator = folded[previous_end : match.start()] if previous_end >= 0 else None
        previous_end = match.end()
        near = separator is not None and len(separator) <= MAX_SEPARATOR
        if near and glued and separator is not None and not any(c.isspace() for c in separator):
            glued.append(word)
        else:
            if len(glued) > 1:
                yield _leet("".join(glued)), False
            glued = [word]
        if len(word) == 1 and near and spelled:
            spelled.append(word)
        else:
            if len(spelled) > 1:
                yield _leet("".join(spelled)), True
            spelled = [word] if len(word) == 1 else []
    if len(glued) > 1:
        yield _leet("".join(glued)), False
    if len(spelled) > 1:
        yield _leet("".join(spelled)), True


def contains_listed_word(text: str, words: WordList | None = None) -> bool:
    """Whether the text (folded here) holds a listed word or an evasion of one. No length
    check: moderate() applies MAX_TEXT_LENGTH first."""
    listed = words if words is not None else WordList.default()
    return any(listed.matches(word, anywhere=anywhere) for word, anywhere in _joined_words(fold(text)))


# ---------------------------------------------------------------------------------------
# Masking (on the original text: the room sees the message as written)

_TOKEN = re.compile(r"[^\W_]+|\s+|.", re.DOTALL)
"""Tokens for masking: a run of letters and digits, a run of whitespace, or one other
character (three disjoint alternatives: linear)."""

_AT = frozenset("@＠﹫")
_DOT = frozenset(".．。｡")
_BRACKETS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_LOCAL_JOINERS = frozenset("._+-")
_DASHES = frozenset("-‐‑‒–")
_PHONE_PUNCTUATION = _DASHES | {".", "(", ")"}

KNOWN_TLDS = frozenset(
    "com net org edu gov info biz io co me app shop store online site xyz dev "
    "uk de fr es it nl be ch at pl pt ru ua cz se no dk fi ie gr tr "
    "us ca mx br ar cl au nz in id th vn ph my sg hk tw cn jp kr".split()
)
"""Top-level domains an obfuscated address ("name at domain dot com", "name (at) shop .
vn") must end with before it is masked: obfuscation uses ordinary words, so without a
known ending "meet at noon dot" would be an address."""


def _is_word(token: str) -> bool:
    return token[:1].isalnum()


def _is_space(token: str) -> bool:
    return token[:1].isspace() and "\n" not in token and len(token) <= 2


class _Tokens:
    """The text as tokens with their offsets."""

    __slots__ = ("text", "tokens", "starts")

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        self.starts: list[int] = []
        for match in _TOKEN.finditer(text):
            self.tokens.append(match.group())
            self.starts.append(match.start())

    def get(self, i: int) -> str:
        return self.tokens[i] if 0 <= i < len(self.tokens) else ""

    def end(self, i: int) -> int:
        return self.starts[i] + len(self.tokens[i])

    def spaced(self, i: int, step: int) -> int:
        """Index of the next token from i in direction step, skipping one space token."""
        return i + 2 * step if _is_space(self.get(i + step)) else i + step


def _at_sign(t: _Tokens, k: int) -> tuple[int, int, str] | None:
    """The "at" of an address at token k: (first token, last token, form) with form
    "plain" (@), "spaced" (a space around @), "bracket" ([at], (@)) or "word" ( at )."""
    token = t.get(k)
    word = _is_word(token) and token.casefold() == "at"
    if token not in _AT and not word:
        return None
    opener, closer = t.get(k - 1), t.get(k + 1)
    if opener in _BRACKETS and closer == _BRACKETS[opener]:
        return t.spaced(k - 1, -1) + 1, t.spaced(k + 1, +1) - 1, "bracket"
    if word:
        return (k - 1, k + 1, "word") if _is_space(opener) and _is_space(closer) else None
    first, last = t.spaced(k, -1) + 1, t.spaced(k, +1) - 1
    return first, last, "plain" if (first, last) == (k, k) else "spaced"


def _dot(t: _Tokens, k: int) -> tuple[int, str] | None:
    """A dot of a domain starting at token k: (its last token, form) or None. Forms as in
    _at_sign: "plain" (.), "spaced" (a space around the dot), "bracket" ([dot]), "word"
    ( dot )."""
    if t.get(k) in _DOT:
        return (k, "plain") if not _is_space(t.get(k + 1)) else (k + 1, "spaced")
    spaced = _is_space(t.get(k))
    j = k + 1 if spaced else k
    token = t.get(j)
    if token in _DOT:
        return t.spaced(j, +1) - 1, "spaced"
    if token in _BRACKETS and t.get(j + 1).casefold() == "dot" and t.get(j + 2) == _BRACKETS[token]:
        return t.spaced(j + 2, +1) - 1, "bracket"
    if spaced and token.casefold() == "dot" and _is_space(t.get(j + 1)):
        return j + 1, "word"
    return None


def _email_spans(t: _Tokens) -> list[tuple[int, int]]:
    """Character spans of e-mail addresses, plain or obfuscated (docs/chat-moderation.md)."""
    spans: list[tuple[int, int]] = []
    after = 0  # first token not yet inside a found address
    for k in range(len(t.tokens)):
        at = _at_sign(t, k)
        if at is None:
            continue
        first, last, at_form = at
        # The local part: words joined by . _ + - ending just before the at.
        start = first - 1
        if start < after or not _is_word(t.get(start)):
            continue
        while t.get(start - 1) in _LOCAL_JOINERS and _is_word(t.get(start - 2)) and start - 2 >= after:
            start -= 2
        if t.starts[first] - t.starts[start] > EMAIL_MAX_LOCAL:
            continue
        # The domain: labels (words joined by dashes) separated by dots.
        j = last + 1
        if not _is_word(t.get(j)):
            continue
        labels = [t.get(j)]
        forms = {at_form}
        while True:
            while t.get(j + 1) in _DASHES and _is_word(t.get(j + 2)):
                j += 2
                labels[-1] += "-" + t.get(j)
            dot = _dot(t, j + 1)
            if (
                dot is None
                or not _is_word(t.get(dot[0] + 1))
                or t.end(dot[0] + 1) - t.starts[last + 1] > EMAIL_MAX_DOMAIN
            ):
                break
            j = dot[0] + 1
            labels.append(t.get(j))
            forms.add(dot[1])
        tld = labels[-1].casefold()
        if len(labels) < 2 or not tld.isalpha() or len(tld) < 2:
            continue
        if forms != {"plain"} and tld not in KNOWN_TLDS:
            continue
        if at_form == "word" and "plain" in forms:
            continue  # "buy it at shop.com" names a website, not an address
        spans.append((t.starts[start], t.end(j)))
        after = j + 1
    return spans


def _is_year(group: str) -> bool:
    return len(group) == 4 and 1900 <= int(group) <= 2099


def _phone_shape(groups: list[str], separators: list[str]) -> bool:
    """Whether digit groups (without a leading + or parentheses) read as a phone number
    rather than a number, a price, a date or a list."""
    if len(groups) == 1:
        return True  # one run of 7-15 digits: a number written without separators
    same = len(set(separators)) == 1
    if same and separators[0] in {".", " "} and len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
        return False  # thousands: 1.299.000, 1 299 000
    if separators == ["."] or (separators[-1] == "." and len(groups[-1]) == 2 and separators.count(".") == 1):
        return False  # decimals: 3.1234567, 1234567.89, 1 234 567.89
    if same and len(groups) == 3 and [len(g) for g in groups] in ([4, 2, 2], [2, 2, 4]):
        if _is_year(groups[0]) or _is_year(groups[2]):
            return False  # dates: 2024-05-01, 01.05.2024
    if all(_is_year(g) for g in groups):
        return False  # years: 1999-2024, 2019 2020 2021
    return not (all(len(g) <= 2 for g in groups) and not groups[0].startswith("0"))  # sizes: 36 38 40 42


def _phone_spans(t: _Tokens, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans of phone numbers: 7-15 digits in groups separated by a space, a dash
    or a dot, an optional leading + and one parenthesised group (docs/chat-moderation.md)."""
    spans: list[tuple[int, int]] = []
    tokens = t.tokens
    i = 0
    while i < len(tokens):
        token = tokens[i]
        first = i
        if token == "+" and t.get(i + 1).isdecimal():
            i += 1
        elif token == "(" and t.get(i + 1).isdecimal() and t.get(i + 2) == ")":
            i += 1
        elif not token.isdecimal():
            i += 1
            continue
        groups = [tokens[i]]
        separators: list[str] = []
        last = i
        while True:  # a separator (spaces, one dash or dot, parentheses), then a digit group
            j = last + 1
            between: list[str] = []
            while len(between) < MAX_SEPARATOR and (_is_space(t.get(j)) or t.get(j) in _PHONE_PUNCTUATION):
                between.append(tokens[j])
                j += 1
            marks = [s for s in between if s in _PHONE_PUNCTUATION - {"(", ")"}]
            if not between or len(marks) > 1 or not t.get(j).isdecimal():
                break
            groups.append(tokens[j])
            separators.append("." if marks == ["."] else "-" if marks else " ")
            last = j
        i = last + 1
        start, end = t.starts[first], t.end(last)
        candidate = t.text[start:end]
        if not PHONE_MIN_DIGITS <= sum(len(g) for g in groups) <= PHONE_MAX_DIGITS:
            continue
        if candidate.count("(") != candidate.count(")") or candidate.count("(") > 1:
            continue
        if "(" in candidate and not candidate[candidate.index("(") + 1 : candidate.index(")")].isdecimal():
            continue
        if any(s < end and start < e for s, e in taken):
            continue
        if not _phone_context(t, first, last):
            continue
        if candidate[0] not in "+(" and not _phone_shape(groups, separators):
            continue
        spans.append((start, end))
    return spans


def _phone_context(t: _Tokens, first: int, last: int) -> bool:
    """Whether the characters around a candidate allow a phone number: not an order number
    (#12345678), not a price ($ 1234567, 1234567 €, 1234567%), not part of a code
    (SKU-1234567, 12/1234567) or of a decimal (0,12345678)."""
    before, before2 = t.get(first - 1), t.get(first - 2)
    if before == "#" or _is_currency(before) or (_is_space(before) and _is_currency(before2)):
        return False
    if before in _DASHES | {"/"} and _is_word(before2):
        return False
    if before in {".", ","} and before2.isdecimal():
        return False
    after, after2 = t.get(last + 1), t.get(last + 2)
    if after in {"%", "/"} or _is_currency(after) or (_is_space(after) and _is_currency(after2)):
        return False
    return not (after in {".", ","} and after2.isdecimal())


def _is_currency(token: str) -> bool:
    return len(token) == 1 and unicodedata.category(token) == "Sc"


def mask(text: str) -> tuple[str, int]:
    """The text with e-mail addresses replaced by MASK_EMAIL and phone numbers by
    MASK_PHONE, and how many were replaced. No length check: moderate() applies
    MAX_TEXT_LENGTH first."""
    tokens = _Tokens(text)
    emails = _email_spans(tokens)
    phones = _phone_spans(tokens, emails)
    spans = sorted([(s, e, MASK_EMAIL) for s, e in emails] + [(s, e, MASK_PHONE) for s, e in phones])
    if not spans:
        return text, 0
    out: list[str] = []
    at = 0
    for start, end, replacement in spans:
        out.append(text[at:start])
        out.append(replacement)
        at = end
    out.append(text[at:])
    return "".join(out), len(spans)


# ---------------------------------------------------------------------------------------


def moderate(text: str, words: WordList | None = None, max_length: int = MAX_TEXT_LENGTH) -> ModerationResult:
    """Moderate one public chat message: refuse it when longer than `max_length` (the chat's
    `[chat] max_text`) or when it holds a listed word (or an evasion of one), else mask phone
    numbers and e-mail addresses. `words` defaults to the shipped list. Never raises on any str."""
    if len(text) > max_length:
        return ModerationResult(text, True, REASON_TOO_LONG)
    if contains_listed_word(text, words):
        return ModerationResult(text, True, REASON_WORD)
    masked, count = mask(text)
    return ModerationResult(masked, False, REASON_MASKED if count else None)

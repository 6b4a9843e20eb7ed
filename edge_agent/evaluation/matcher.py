"""Is a model's answer correct? Normalise both sides, then look for a whole-phrase match.

Normalisation (``normalise``), in order:

1. Unicode NFKC, then ``casefold`` (so "ﬁ" == "fi", "Straße" == "strasse").
2. Thousands separators go: a comma between a digit and exactly three digits is removed
   ("1,000,000" -> "1000000").
3. Apostrophes are deleted so contractions stay one word ("isn't" -> "isnt").
4. Every other punctuation or symbol character becomes a space, except a decimal point
   between two digits ("3.5" stays) and a minus sign that starts a number ("-5" stays,
   "3-5" becomes "3 5"). Underscore counts as punctuation.
5. Whitespace collapses to single spaces, trimmed.

Matching is on whole tokens: an acceptable answer matches when its normalised tokens occur
as a contiguous run of the answer's tokens, so "4" does not match "14" and "no" does not
match "not" or "know". Any one acceptable answer is enough.

Yes/no questions (the acceptable list is exactly one of "yes" or "no") use the first
polar word of the answer instead, from the small lists ``YES_WORDS`` and ``NO_WORDS``:
"No, it is not" is a no; "Yes, but not always" is a yes; an answer with neither is wrong.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["NO_WORDS", "YES_WORDS", "is_correct", "normalise"]

YES_WORDS: frozenset[str] = frozenset({"yes", "yeah", "yep", "yup", "correct", "true"})
NO_WORDS: frozenset[str] = frozenset(
    {
        "no",
        "nope",
        "not",
        "false",
        "incorrect",
        "never",
        # contractions, as normalise leaves them (apostrophe removed)
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "dont",
        "doesnt",
        "didnt",
        "cant",
        "cannot",
        "wont",
    }
)

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
# group 1/2: characters kept; anything else matched is replaced by a space
_PUNCTUATION = re.compile(r"((?<=\d)\.(?=\d))|((?<!\w)-(?=\d))|[^\w\s]|_")


def _replace(match: re.Match[str]) -> str:
    if match.group(1) or match.group(2):
        return match.group(0)
    return " "


def normalise(text: str) -> str:
    """Return ``text`` normalised for matching (see the module docstring for the rules)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _THOUSANDS.sub("", text)
    text = _APOSTROPHES.sub("", text)
    text = _PUNCTUATION.sub(_replace, text)
    return " ".join(text.split())


def _contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    width = len(needle)
    return any(
        list(haystack[start : start + width]) == list(needle)
        for start in range(len(haystack) - width + 1)
    )


def _first_polar_word(tokens: Sequence[str]) -> str | None:
    for token in tokens:
        if token in YES_WORDS:
            return "yes"
        if token in NO_WORDS:
            return "no"
    return None


def is_correct(answer_text: str, acceptable: Sequence[str]) -> bool:
    """True when any acceptable answer occurs in ``answer_text`` as a whole phrase.

    Acceptable answers that normalise to nothing are ignored (they would match anything).
    """
    if isinstance(acceptable, str):
        raise TypeError("acceptable must be a sequence of strings, not one string")
    tokens = normalise(answer_text).split()
    wanted = [normalise(option) for option in acceptable]
    wanted = [option for option in wanted if option]
    if wanted in (["yes"], ["no"]):
        return _first_polar_word(tokens) == wanted[0]
    return any(_contains_run(tokens, option.split()) for option in wanted)

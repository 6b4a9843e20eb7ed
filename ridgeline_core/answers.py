"""Short answers compared as words: the normalisation the evaluation's matcher and the
broker's vote share (see :mod:`edge_agent.evaluation.matcher` for the rules), and the
polar words that make an answer a yes or a no."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["NO_WORDS", "YES_WORDS", "first_polar_word", "normalise"]

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


def first_polar_word(tokens: Sequence[str]) -> str | None:
    """ "yes" or "no" by the first polar word of ``tokens`` (normalised words), else None."""
    for token in tokens:
        if token in YES_WORDS:
            return "yes"
        if token in NO_WORDS:
            return "no"
    return None

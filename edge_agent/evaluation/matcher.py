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

from collections.abc import Sequence

from ridgeline_core.answers import NO_WORDS, YES_WORDS, first_polar_word, normalise

__all__ = ["NO_WORDS", "YES_WORDS", "is_correct", "normalise"]


def _contains_run(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    width = len(needle)
    return any(
        list(haystack[start : start + width]) == list(needle)
        for start in range(len(haystack) - width + 1)
    )


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
        return first_polar_word(tokens) == wanted[0]
    return any(_contains_run(tokens, option.split()) for option in wanted)

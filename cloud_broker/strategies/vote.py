"""Answers compared as votes: a short answer's normalised words (the evaluation's
normalisation, :mod:`ridgeline_core.answers`), a yes/no answer by its first word, and the
majority among them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ridgeline_core.answers import NO_WORDS, YES_WORDS, normalise

__all__ = ["majority", "vote_key"]

_MAX_WORDS = 12


def vote_key(text: str) -> str:
    """What an answer votes for: ``yes``/``no`` when its first word says so, else the
    normalised words of its first line (at most twelve)."""
    lines = [line for line in text.splitlines() if line.strip()]
    words = normalise(lines[0]).split() if lines else []
    if words and words[0] in YES_WORDS:
        return "yes"
    if words and words[0] in NO_WORDS:
        return "no"
    return " ".join(words[:_MAX_WORDS])


def majority(keys: Sequence[str]) -> tuple[str, int]:
    """The key most members voted for and its votes; a tie goes to the earliest voter
    (members run cheapest first). Empty answers do not vote."""
    counts = Counter(key for key in keys if key)
    if not counts:
        return "", 0
    best = max(counts.values())
    winner = next(key for key in keys if key and counts[key] == best)
    return winner, best

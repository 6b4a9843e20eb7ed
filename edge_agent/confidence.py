"""Confidence v0: turn the per-token signals of an answer into one score in [0, 1].

Scorers are pure functions registered by name; the threshold policy and the
calibrator (a later step) only ever see the score. The default, ``tail``, is
the geometric mean of the lowest 20% of chosen-token probabilities (at least
one token). Why: an answer is usually wrong because of a few uncertain tokens
(the fact itself), while most tokens are near-certain filler ("The capital of
... is"). A plain average lets the filler drown the doubt and falls as answers
get longer; the minimum sees the doubt but is set by one token, however long
the answer. The lowest-20% mean sits between the two and does not drift with
length. benchmarks/confidence_v0.py measures every scorer here on a small
labelled set; the calibrated scorer replaces this choice once labelled data
exists (see docs/confidence.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ridgeline_core.runtime import TokenSignals

__all__ = ["Scorer", "get_scorer", "register_scorer", "scorer_names"]

Scorer = Callable[[Sequence[TokenSignals]], float]

_SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    def decorate(function: Scorer) -> Scorer:
        _SCORERS[name] = function
        return function

    return decorate


def get_scorer(name: str) -> Scorer:
    try:
        return _SCORERS[name]
    except KeyError:
        raise KeyError(f"unknown scorer {name!r} (known: {', '.join(scorer_names())})") from None


def scorer_names() -> list[str]:
    return sorted(_SCORERS)


def _geometric_mean(probs: Sequence[float]) -> float:
    return math.exp(sum(math.log(max(p, 1e-12)) for p in probs) / len(probs))


@register_scorer("tail")
def tail(signals: Sequence[TokenSignals]) -> float:
    """Geometric mean of the lowest 20% of chosen-token probabilities."""
    if not signals:
        return 0.0
    probs = sorted(s.prob for s in signals)
    return _geometric_mean(probs[: max(1, math.ceil(0.2 * len(probs)))])


@register_scorer("geomean")
def geomean(signals: Sequence[TokenSignals]) -> float:
    """exp(mean log-probability): the length-normalised likelihood of the answer."""
    return _geometric_mean([s.prob for s in signals]) if signals else 0.0


@register_scorer("mean")
def mean(signals: Sequence[TokenSignals]) -> float:
    """Arithmetic mean of chosen-token probabilities."""
    return sum(s.prob for s in signals) / len(signals) if signals else 0.0


@register_scorer("min")
def minimum(signals: Sequence[TokenSignals]) -> float:
    """The least probable chosen token."""
    return min(s.prob for s in signals) if signals else 0.0


@register_scorer("margin")
def margin(signals: Sequence[TokenSignals]) -> float:
    """Mean top-1/top-2 probability margin."""
    return sum(s.margin for s in signals) / len(signals) if signals else 0.0


@register_scorer("entropy")
def entropy(signals: Sequence[TokenSignals]) -> float:
    """exp(-mean entropy): 1 when every step was certain."""
    return math.exp(-sum(s.entropy for s in signals) / len(signals)) if signals else 0.0

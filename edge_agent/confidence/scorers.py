"""Confidence v0: turn the per-token signals of an answer into one score in [0, 1].

Scorers are pure functions registered by name; the threshold policy and the
calibrator (a later step) only ever see the score. The default, ``margin``, is
the mean over the answer's tokens of the top-1 minus top-2 probability of the
next-token distribution: how clearly the model preferred what it said over its
best alternative, step by step.

Chosen by measurement (benchmarks/confidence_v0.py, 120 labelled questions,
SmolLM2-135M-Instruct; table in docs/confidence.md): every aggregate separates
right from wrong answers only weakly on whole chat replies (AUROC 0.55-0.57),
``margin`` ties for the best AUROC (0.573, with ``min``), ties for the best on
short answers (0.682), and drifts least with answer length (Spearman rho -0.26
against -0.54 for ``min``). It is a raw score, not a probability: the calibrator
and better aggregates (answer span, learned combinations) come with the
evaluation harness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ridgeline_core.runtime import TokenSignals

__all__ = ["Scorer", "geometric_mean", "get_scorer", "register_scorer", "scorer_names"]

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


def geometric_mean(probs: Sequence[float]) -> float:
    """exp(mean log p), 0 for no probabilities (p floored at 1e-12)."""
    if not probs:
        return 0.0
    return math.exp(sum(math.log(max(p, 1e-12)) for p in probs) / len(probs))


@register_scorer("tail")
def tail(signals: Sequence[TokenSignals]) -> float:
    """Geometric mean of the lowest 20% (at least one) of chosen-token probabilities."""
    if not signals:
        return 0.0
    probs = sorted(s.prob for s in signals)
    return geometric_mean(probs[: max(1, math.ceil(0.2 * len(probs)))])


@register_scorer("geomean")
def geomean(signals: Sequence[TokenSignals]) -> float:
    """exp(mean log-probability): the length-normalised likelihood of the answer."""
    return geometric_mean([s.prob for s in signals]) if signals else 0.0


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

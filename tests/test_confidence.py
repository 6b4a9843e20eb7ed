"""Confidence v0 scorers: token signals -> one score in [0, 1]."""

from __future__ import annotations

import math
import random

import pytest

from edge_agent.confidence.scorers import get_scorer, scorer_names
from ridgeline_core.runtime import TokenSignals


def sig(prob: float, entropy: float = 0.5, margin: float = 0.5) -> TokenSignals:
    return TokenSignals(prob=prob, entropy=entropy, margin=margin)


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def test_known_scorers_are_registered() -> None:
    names = scorer_names()
    assert names == sorted(names)
    assert {"tail", "geomean", "mean", "min", "margin", "entropy"} <= set(names)


@pytest.mark.parametrize("name", scorer_names())
def test_no_tokens_scores_zero(name: str) -> None:
    assert get_scorer(name)([]) == 0.0


@pytest.mark.parametrize("name", scorer_names())
def test_scores_are_in_unit_interval(name: str) -> None:
    scorer = get_scorer(name)
    rng = random.Random(name)
    cases: list[list[TokenSignals]] = [
        [sig(1.0, 0.0, 1.0)],
        [sig(0.0, 12.5, 0.0)],
        [sig(1e-30, 20.0, 0.0)] * 3,
        [sig(1.0, 0.0, 1.0)] * 500,
    ]
    for _ in range(200):
        n = rng.randint(1, 80)
        cases.append([sig(rng.random(), rng.uniform(0.0, 12.0), rng.random()) for _ in range(n)])
    for signals in cases:
        score = scorer(signals)
        assert 0.0 <= score <= 1.0, (name, signals[:3])
        assert math.isfinite(score)


@pytest.mark.parametrize("name", scorer_names())
def test_certain_answer_scores_one(name: str) -> None:
    assert get_scorer(name)([sig(1.0, 0.0, 1.0)] * 7) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 2, 4, 5, 6, 9, 10, 11, 15, 23, 100, 101])
def test_tail_is_geometric_mean_of_lowest_fifth(n: int) -> None:
    rng = random.Random(n)
    probs = [rng.uniform(0.01, 1.0) for _ in range(n)]
    k = -(-n // 5)  # ceil(n / 5) in integers
    expected = geometric_mean(sorted(probs)[:k])
    assert get_scorer("tail")([sig(p) for p in probs]) == pytest.approx(expected, rel=1e-12)


def test_tail_worked_example() -> None:
    probs = [0.9, 0.2, 0.95, 0.5, 0.99, 0.97, 0.98, 0.96]  # 8 tokens -> lowest 2: 0.2, 0.5
    assert get_scorer("tail")([sig(p) for p in probs]) == pytest.approx(math.sqrt(0.2 * 0.5))


DOUBTFUL = [sig(0.95), sig(0.05), sig(0.9), sig(0.97), sig(0.92)]  # one uncertain fact
PADDED = DOUBTFUL + [sig(0.99)] * 200  # the same answer followed by confident filler


def test_tail_sees_doubt_that_mean_drowns() -> None:
    tail, mean = get_scorer("tail"), get_scorer("mean")
    assert tail(DOUBTFUL) == pytest.approx(0.05)
    assert mean(PADDED) > mean(DOUBTFUL) + 0.15  # the plain average rises with filler...
    assert mean(PADDED) > 0.98
    assert tail(PADDED) < mean(PADDED)  # ...tail less so


def test_tail_does_not_drift_with_confident_filler_between_same_share() -> None:
    """Scaling an answer (same mix of tokens, more of them) leaves tail unchanged."""
    base = [sig(0.1), sig(0.99), sig(0.99), sig(0.99), sig(0.99)]
    tail = get_scorer("tail")
    assert tail(base) == pytest.approx(0.1)
    assert tail(base * 20) == pytest.approx(0.1)


def test_order_does_not_matter() -> None:
    rng = random.Random(3)
    signals = [sig(rng.random(), rng.uniform(0, 5), rng.random()) for _ in range(31)]
    shuffled = signals[:]
    rng.shuffle(shuffled)
    for name in scorer_names():
        assert get_scorer(name)(shuffled) == pytest.approx(get_scorer(name)(signals))


def test_simple_scorers() -> None:
    signals = [sig(0.5, 1.0, 0.2), sig(0.8, 3.0, 0.6)]
    assert get_scorer("mean")(signals) == pytest.approx(0.65)
    assert get_scorer("min")(signals) == pytest.approx(0.5)
    assert get_scorer("geomean")(signals) == pytest.approx(math.sqrt(0.4))
    assert get_scorer("margin")(signals) == pytest.approx(0.4)
    assert get_scorer("entropy")(signals) == pytest.approx(math.exp(-2.0))


def test_zero_probability_does_not_crash_log_based_scorers() -> None:
    signals = [sig(0.0), sig(0.9)]
    assert get_scorer("tail")(signals) == pytest.approx(1e-12)
    assert 0.0 <= get_scorer("geomean")(signals) < 1e-5


def test_unknown_scorer_lists_known_names() -> None:
    with pytest.raises(KeyError) as info:
        get_scorer("nope")
    message = str(info.value)
    assert "nope" in message
    for name in scorer_names():
        assert name in message

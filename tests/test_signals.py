"""Per-token confidence signals against a plain float64 numpy reference."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from ridgeline_core.runtime.signals import SignalComputer
from ridgeline_core.runtime.types import TokenSignals


def reference(logits: npt.NDArray[np.float32], token: int) -> tuple[float, float, float]:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    top2 = np.sort(p)[-2:]
    return float(p[token]), entropy, float(top2[1] - top2[0])


def assert_matches(signals: TokenSignals, logits: npt.NDArray[np.float32], token: int) -> None:
    prob, entropy, margin = reference(logits, token)
    assert signals.prob == pytest.approx(prob, rel=1e-5, abs=1e-12)
    assert signals.entropy == pytest.approx(entropy, rel=1e-5, abs=1e-9)
    assert signals.margin == pytest.approx(margin, rel=1e-5, abs=1e-12)


def random_logits(n_vocab: int, seed: int, scale: float) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n_vocab) * scale).astype(np.float32)


@pytest.mark.parametrize("n_vocab", [10, 49152, 262144])
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_matches_reference_for_argmax_and_other_tokens(n_vocab: int, scale: float) -> None:
    compute = SignalComputer(n_vocab)
    rng = np.random.default_rng(n_vocab)
    for seed in range(3):
        logits = random_logits(n_vocab, seed, scale)
        top = int(logits.argmax())
        others = [int(t) for t in rng.choice(n_vocab, size=3, replace=False) if t != top]
        for token in [top, int(logits.argmin()), *others]:
            assert_matches(compute(logits, token), logits, token)


@pytest.mark.parametrize("n_vocab", [10, 49152, 262144])
def test_peaked_distribution(n_vocab: int) -> None:
    logits = random_logits(n_vocab, 7, 1.0)
    logits[n_vocab // 3] += 25.0  # one confident token
    compute = SignalComputer(n_vocab)
    signals = compute(logits, n_vocab // 3)
    assert_matches(signals, logits, n_vocab // 3)
    assert signals.prob > 0.9
    assert signals.margin > 0.9


def test_argmax_token_has_prob_at_least_any_other() -> None:
    logits = random_logits(1000, 3, 2.0)
    compute = SignalComputer(1000)
    top = int(logits.argmax())
    best = compute(logits, top).prob
    assert all(compute(logits, t).prob <= best for t in range(0, 1000, 37))


@pytest.mark.parametrize("n_vocab", [10, 49152, 262144])
def test_huge_magnitudes_stay_finite(n_vocab: int) -> None:
    rng = np.random.default_rng(11)
    logits = rng.uniform(-1e4, 1e4, n_vocab).astype(np.float32)
    compute = SignalComputer(n_vocab)
    for token in (int(logits.argmax()), int(logits.argmin()), 0):
        signals = compute(logits, token)
        assert all(math.isfinite(v) for v in (signals.prob, signals.entropy, signals.margin))
        assert 0.0 <= signals.prob <= 1.0
        assert signals.entropy >= 0.0
        assert 0.0 <= signals.margin <= 1.0
        prob, entropy, margin = reference(logits, token)
        assert signals.prob == pytest.approx(prob, rel=1e-5, abs=1e-12)
        assert signals.entropy == pytest.approx(entropy, rel=1e-4, abs=1e-6)
        assert signals.margin == pytest.approx(margin, rel=1e-5, abs=1e-9)


def test_extreme_two_level_logits() -> None:
    logits = np.full(49152, -1e4, dtype=np.float32)
    logits[5] = 1e4
    compute = SignalComputer(49152)
    winner = compute(logits, 5)
    assert winner.prob == pytest.approx(1.0)
    assert winner.entropy == pytest.approx(0.0, abs=1e-9)
    assert winner.margin == pytest.approx(1.0)
    loser = compute(logits, 6)
    assert loser.prob == 0.0
    assert math.isfinite(loser.entropy)


def test_uniform_large_logits() -> None:
    n = 49152
    logits = np.full(n, 1e4, dtype=np.float32)
    signals = SignalComputer(n)(logits, 123)
    assert signals.prob == pytest.approx(1.0 / n, rel=1e-6)
    assert signals.entropy == pytest.approx(math.log(n), rel=1e-6)
    assert signals.margin == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n_vocab", [10, 262144])
def test_input_logits_are_not_modified(n_vocab: int) -> None:
    logits = random_logits(n_vocab, 5, 3.0)
    before = logits.copy()
    compute = SignalComputer(n_vocab)
    compute(logits, int(logits.argmax()))
    compute(logits, 0)
    assert np.array_equal(logits, before)


def test_tie_at_the_top_gives_zero_margin() -> None:
    logits = random_logits(49152, 9, 1.0)
    peak = float(logits.max()) + 3.0
    logits[100] = peak
    logits[40000] = peak
    compute = SignalComputer(49152)
    for token in (100, 40000):
        signals = compute(logits, token)
        assert signals.margin == pytest.approx(0.0, abs=1e-12)
        assert_matches(signals, logits, token)
    assert compute(logits, 100).prob == pytest.approx(compute(logits, 40000).prob)


def test_scratch_buffers_do_not_leak_between_calls() -> None:
    compute = SignalComputer(4096)
    first = random_logits(4096, 1, 2.0)
    second = random_logits(4096, 2, 2.0)
    a1 = compute(first, 17)
    compute(second, 99)
    assert compute(first, 17) == a1
    assert_matches(compute(second, 99), second, 99)


def test_two_token_vocabulary() -> None:
    logits = np.array([0.0, math.log(3.0)], dtype=np.float32)  # p = 0.25, 0.75
    compute = SignalComputer(2)
    assert compute(logits, 1).prob == pytest.approx(0.75, rel=1e-6)
    assert compute(logits, 0).prob == pytest.approx(0.25, rel=1e-6)
    assert compute(logits, 1).margin == pytest.approx(0.5, rel=1e-6)
    expected_entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert compute(logits, 0).entropy == pytest.approx(expected_entropy, rel=1e-6)


def test_masked_tokens_do_not_break_entropy() -> None:
    logits = random_logits(1000, 4, 1.0)
    logits[::2] = -np.inf
    top = int(logits.argmax())
    signals = SignalComputer(1000)(logits, top)
    _, entropy, _ = reference(logits, top)
    assert signals.entropy == pytest.approx(entropy, rel=1e-5)

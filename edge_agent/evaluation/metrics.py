"""How good is a confidence score, and how well does it route? Pure numpy, vectorised.

Notation: n items; ``labels``/``local_correct`` say whether the local model's answer was
right; ``strong_correct`` whether the strong (escalation) model's was (all True for an
"oracle" strong model); ``scores`` are raw confidences (higher = keep local); ``probs``
are calibrated probabilities in [0, 1].

* AUROC (Mann-Whitney): P(score of a right answer > score of a wrong one), ties count half:
  ``(R_pos - n_pos(n_pos+1)/2) / (n_pos n_neg)`` with R_pos the sum of the average ranks
  of the positives.
* ECE: ``sum_b (n_b/n) |acc_b - conf_b|`` over ``bins`` equal-width bins of [0, 1]
  (bin ``min(floor(p*bins), bins-1)``). Brier: ``mean((p - y)^2)``.
* Coverage/accuracy: answer the k most confident locally, k = 1..n:
  ``(k/n, mean correct of those k)``.
* Routing curve (RouteLLM / RouterBench style): escalate the k lowest-score items
  (stable sort, so ties go in input order), k = 0..n: ``(k/n, accuracy of the mix)``.
* PGR (performance gap recovered): ``(acc - local_acc) / (strong_acc - local_acc)``,
  nan when the two models are equally accurate. APGR: trapezoid area under PGR against
  escalation rate over [0, 1]. CPT(x): the smallest escalation rate on the curve whose
  PGR >= x (1e-12 slack for rounding), nan if none.
* Random router: escalating a uniformly random k of n items gives expected accuracy
  ``local_acc + (k/n)(strong_acc - local_acc)`` exactly (linearity of expectation), so
  its PGR at rate r is r, APGR is 0.5, and CPT(x) is ``ceil(x n)/n`` (x as n grows).
  No simulation is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Curve",
    "apgr",
    "auroc",
    "brier",
    "coverage_accuracy",
    "cpt",
    "ece",
    "pgr",
    "random_router_baseline",
    "routing_curve",
    "summarise",
]

Curve = list[tuple[float, float]]
ArrayLike = npt.ArrayLike
_SLACK = 1e-12


def _floats(values: ArrayLike, name: str) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _bools(values: ArrayLike, name: str, n: int) -> npt.NDArray[np.bool_]:
    array = np.asarray(values)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    if array.dtype != np.bool_ and not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{name} must be booleans (or 0/1)")
    return array.astype(np.bool_)


def _probs(values: ArrayLike, name: str = "probs") -> npt.NDArray[np.float64]:
    array = _floats(values, name)
    if np.any((array < 0.0) | (array > 1.0)):
        raise ValueError(f"{name} must lie in [0, 1]")
    return array


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for ``labels``; ties count half."""
    s = _floats(scores, "scores")
    y = _bools(labels, "labels", s.size)
    n_pos = int(y.sum())
    n_neg = s.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auroc needs both classes in labels")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # 0-based rank where each distinct value begins
    average_rank = starts + (counts + 1) / 2.0  # 1-based average rank of the tied group
    rank_sum = float(average_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def ece(probs: ArrayLike, labels: ArrayLike, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width bins."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p = _probs(probs)
    y = _bools(labels, "labels", p.size).astype(np.float64)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    confidence = np.bincount(index, weights=p, minlength=bins)
    correct = np.bincount(index, weights=y, minlength=bins)
    # sum_b (n_b/n)|acc_b - conf_b| == sum_b |correct_b - confidence_b| / n
    return float(np.abs(correct - confidence).sum() / p.size)


def brier(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean squared error of the probabilities against the 0/1 outcomes."""
    p = _probs(probs)
    y = _bools(labels, "labels", p.size).astype(np.float64)
    return float(np.mean((p - y) ** 2))


def coverage_accuracy(scores: ArrayLike, labels: ArrayLike) -> Curve:
    """``(k/n, accuracy of the k most confident)`` for k = 1..n (ties in input order)."""
    s = _floats(scores, "scores")
    y = _bools(labels, "labels", s.size)
    order = np.argsort(-s, kind="stable")
    k = np.arange(1, s.size + 1)
    accuracy = np.cumsum(y[order]) / k
    return [(float(c), float(a)) for c, a in zip(k / s.size, accuracy, strict=True)]


def routing_curve(scores: ArrayLike, local_correct: ArrayLike, strong_correct: ArrayLike) -> Curve:
    """``(escalation rate, accuracy)`` escalating the lowest scores first, k = 0..n."""
    s = _floats(scores, "scores")
    local = _bools(local_correct, "local_correct", s.size)
    strong = _bools(strong_correct, "strong_correct", s.size)
    order = np.argsort(s, kind="stable")
    gain = strong[order].astype(np.int64) - local[order].astype(np.int64)
    correct = int(local.sum()) + np.concatenate(([0], np.cumsum(gain)))
    rate = np.arange(s.size + 1) / s.size
    return [(float(r), float(a)) for r, a in zip(rate, correct / s.size, strict=True)]


def pgr(accuracy: float, local_acc: float, strong_acc: float) -> float:
    """Performance gap recovered; nan when ``strong_acc == local_acc``."""
    gap = strong_acc - local_acc
    if gap == 0:
        return math.nan
    return (accuracy - local_acc) / gap


def _pgr_points(
    curve: Sequence[tuple[float, float]], local_acc: float, strong_acc: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    points = np.asarray(curve, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 2 or points.shape[1] != 2:
        raise ValueError("curve must be at least two (escalation_rate, accuracy) points")
    rate = points[:, 0]
    if np.any(np.diff(rate) < 0) or rate[0] != 0.0 or rate[-1] != 1.0:
        raise ValueError("curve rates must rise from 0 to 1")
    gap = strong_acc - local_acc
    if gap == 0:
        return rate, np.full(rate.shape, np.nan)
    return rate, (points[:, 1] - local_acc) / gap


def apgr(curve: Sequence[tuple[float, float]], local_acc: float, strong_acc: float) -> float:
    """Area under PGR against escalation rate (trapezoid over [0, 1]); nan if PGR is."""
    rate, gain = _pgr_points(curve, local_acc, strong_acc)
    return float(np.sum(np.diff(rate) * (gain[1:] + gain[:-1]) / 2.0))


def cpt(
    curve: Sequence[tuple[float, float]], local_acc: float, strong_acc: float, target: float
) -> float:
    """Smallest escalation rate on ``curve`` with PGR >= ``target``; nan if none reaches it."""
    rate, gain = _pgr_points(curve, local_acc, strong_acc)
    reached = np.flatnonzero(gain >= target - _SLACK)  # nan compares False
    return float(rate[reached[0]]) if reached.size else math.nan


def random_router_baseline(local_correct: ArrayLike, strong_correct: ArrayLike) -> dict[str, Any]:
    """The random router in closed form (see the module docstring): curve, apgr, cpt50/80."""
    local = np.asarray(local_correct)
    n = local.shape[0] if local.ndim == 1 else 0
    if n == 0:
        raise ValueError("local_correct must be a non-empty 1-D array")
    local = _bools(local, "local_correct", n)
    strong = _bools(strong_correct, "strong_correct", n)
    local_acc, strong_acc = float(local.mean()), float(strong.mean())
    rate = np.arange(n + 1) / n
    curve = [(float(r), float(local_acc + r * (strong_acc - local_acc))) for r in rate]
    return {
        "curve": curve,
        "apgr": apgr(curve, local_acc, strong_acc),
        "cpt50": cpt(curve, local_acc, strong_acc, 0.5),
        "cpt80": cpt(curve, local_acc, strong_acc, 0.8),
    }


def summarise(
    scores: ArrayLike,
    probs: ArrayLike,
    local_correct: ArrayLike,
    strong_correct: ArrayLike,
    tau: float,
) -> dict[str, Any]:
    """One evaluation's numbers: score quality, calibration, routing, and a random baseline.

    ``escalation_rate`` is the fraction with ``probs < tau``; ``hybrid_accuracy`` is the
    accuracy when exactly those go to the strong model. Routing metrics use ``scores``.
    ``auroc`` is nan when every local answer was right (or every one wrong).
    """
    s = _floats(scores, "scores")
    p = _probs(probs)
    if p.size != s.size:
        raise ValueError(f"probs has {p.size} items, scores {s.size}")
    local = _bools(local_correct, "local_correct", s.size)
    strong = _bools(strong_correct, "strong_correct", s.size)
    local_acc, strong_acc = float(local.mean()), float(strong.mean())
    escalate = p < tau
    escalation_rate = float(escalate.mean())
    curve = routing_curve(s, local, strong)
    baseline = random_router_baseline(local, strong)
    both_classes = 0 < local.sum() < local.size
    return {
        "n": int(s.size),
        "local_accuracy": local_acc,
        "strong_accuracy": strong_acc,
        "auroc": auroc(s, local) if both_classes else math.nan,
        "ece": ece(p, local),
        "brier": brier(p, local),
        "escalation_rate": escalation_rate,
        "hybrid_accuracy": float(np.where(escalate, strong, local).mean()),
        "cpt50": cpt(curve, local_acc, strong_acc, 0.5),
        "cpt80": cpt(curve, local_acc, strong_acc, 0.8),
        "apgr": apgr(curve, local_acc, strong_acc),
        "random": {
            "apgr": baseline["apgr"],
            "cpt50": baseline["cpt50"],
            "cpt80": baseline["cpt80"],
            "hybrid_accuracy": local_acc + escalation_rate * (strong_acc - local_acc),
        },
    }

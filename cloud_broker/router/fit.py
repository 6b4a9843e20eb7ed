"""L2-regularised logistic regression (Newton's method) and AUROC, in numpy: enough for a
few hundred judged outcomes per model, with no extra dependency."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Logistic", "auroc", "fit_logistic", "kfold_auroc"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Logistic:
    """P(y=1 | x) = sigmoid(x . weights + bias)."""

    weights: tuple[float, ...]
    bias: float

    def predict(self, rows: Array) -> Array:
        z = rows @ np.asarray(self.weights) + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40, 40))), dtype=np.float64)


def fit_logistic(rows: Array, targets: Array, l2: float = 1.0, iterations: int = 25) -> Logistic:
    """Fit by Newton's method; ``targets`` in [0, 1] (judged scores count as soft labels);
    the bias is not regularised."""
    n, d = rows.shape
    x = np.hstack([rows, np.ones((n, 1))])
    w = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -40, 40)))
        gradient = x.T @ (p - targets) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return Logistic(tuple(float(v) for v in w[:-1]), float(w[-1]))


def auroc(scores: Array, labels: Array) -> float:
    """Area under the ROC curve (ties count half); 0.5 when one class is missing."""
    positive = labels >= 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return 0.5
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def kfold_auroc(rows: Array, targets: Array, l2: float, folds: int = 5, seed: int = 0) -> float:
    """Held-out AUROC of :func:`fit_logistic` over ``folds`` seeded folds."""
    index = np.random.default_rng(seed).permutation(len(rows))
    scores = np.zeros(len(rows))
    for fold in np.array_split(index, folds):
        train = np.setdiff1d(index, fold)
        scores[fold] = fit_logistic(rows[train], targets[train], l2).predict(rows[fold])
    return auroc(scores, targets)

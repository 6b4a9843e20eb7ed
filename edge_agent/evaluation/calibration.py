"""Calibrators: turn raw confidence scores (1-D) or feature vectors (2-D) into probabilities.

Each calibrator is a small pure object: ``fit(x, y)`` learns from labelled outcomes,
``predict(x)`` returns probabilities in [0, 1], and ``to_dict()`` / ``from_dict()`` give a
JSON-able form (a few numbers) to keep next to a model manifest. ``CALIBRATORS`` maps each
``kind`` to its class; ``load_calibrator`` rebuilds one from its dict. Malformed input or
dicts raise ``ValueError``; predicting before fitting raises ``RuntimeError``.

* ``isotonic``: pool-adjacent-violators gives the best non-decreasing step fit of y on x;
  prediction interpolates linearly between the ends of the fitted blocks and holds the end
  values outside the fitted range.
* ``platt``: ``sigmoid(a*x + b)``; x is standardised while fitting (so the L2 penalty does
  not depend on the score's scale) and (a, b) stored on the original scale.
* ``logistic``: ``sigmoid(w . z + b)`` with z the features standardised by the stored
  mean/std; for learned combinations of several confidence signals.

Both logistic fits minimise ``sum log-loss + l2/2 * |w|^2`` (intercept not penalised) by
Newton's method (IRLS) with step halving; the tiny default L2 keeps weights finite when the
classes are separable.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "IsotonicCalibrator",
    "LogisticCalibrator",
    "PlattCalibrator",
    "load_calibrator",
]

FloatArray = npt.NDArray[np.float64]


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.exp(-np.logaddexp(0.0, -z))


def _check_finite(array: FloatArray, name: str) -> FloatArray:
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _scores(x: npt.ArrayLike) -> FloatArray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"expected 1-D scores, got shape {array.shape}")
    return _check_finite(array, "x")


def _feature_rows(x: npt.ArrayLike) -> FloatArray:
    """Feature vectors as rows (n, features); a 1-D array is n rows of one feature."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"expected a 2-D (n, features) array, got shape {array.shape}")
    return _check_finite(array, "x")


def _labels(y: npt.ArrayLike, n: int) -> FloatArray:
    array = np.asarray(y)
    if array.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {array.shape}")
    if not np.all((array == 0) | (array == 1)):
        raise ValueError("y must be booleans or 0/1")
    return array.astype(np.float64)


def _float_list(data: dict[str, Any], key: str) -> list[float]:
    value = data.get(key)
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise ValueError(f"calibrator field {key!r} must be a list of finite numbers")
    return [float(v) for v in value]


def _float(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"calibrator field {key!r} must be a finite number")
    return float(value)


def _standardise(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _fit_logistic(z: FloatArray, y: FloatArray, l2: float, max_iter: int = 100) -> FloatArray:
    """Newton/IRLS for [w, b] on design ``z`` (n, d); returns d+1 numbers, intercept last."""
    n, d = z.shape
    design = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 1e-12  # keep the Hessian invertible without pulling the intercept

    def objective(w: FloatArray) -> float:
        margin = design @ w
        return float(np.sum(np.logaddexp(0.0, margin) - y * margin) + 0.5 * penalty @ (w * w))

    weights = np.zeros(d + 1)
    current = objective(weights)
    for _ in range(max_iter):
        p = _sigmoid(design @ weights)
        gradient = design.T @ (p - y) + penalty * weights
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-10:
            candidate = weights - scale * step
            value = objective(candidate)
            if value <= current:
                break
            scale /= 2.0
        else:
            break
        weights, current = candidate, value
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return weights


class Calibrator(ABC):
    """Maps raw scores or features to probabilities of the local answer being right."""

    kind: ClassVar[str]

    @abstractmethod
    def fit(self, x: npt.ArrayLike, y: npt.ArrayLike) -> Calibrator: ...

    @abstractmethod
    def predict(self, x: npt.ArrayLike) -> FloatArray: ...

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator: ...

    def _check_kind(self, data: dict[str, Any]) -> None:
        if data.get("kind") != self.kind:
            raise ValueError(f"expected a {self.kind!r} calibrator, got {data.get('kind')!r}")


class IsotonicCalibrator(Calibrator):
    """Monotone (non-decreasing) step fit by pool-adjacent-violators."""

    kind = "isotonic"

    def __init__(self) -> None:
        self.thresholds: FloatArray | None = None
        self.values: FloatArray | None = None

    def fit(self, x: npt.ArrayLike, y: npt.ArrayLike) -> IsotonicCalibrator:
        scores = _scores(x)
        labels = _labels(y, scores.size)
        # one point per distinct score, weighted by how many share it
        unique, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=labels) / counts
        blocks = _pool_adjacent_violators(means, counts.astype(np.float64))
        thresholds: list[float] = []
        values: list[float] = []
        for start, stop, value in blocks:
            for edge in sorted({float(unique[start]), float(unique[stop - 1])}):
                thresholds.append(edge)
                values.append(value)
        self.thresholds = np.asarray(thresholds)
        self.values = np.clip(np.asarray(values), 0.0, 1.0)
        return self

    def predict(self, x: npt.ArrayLike) -> FloatArray:
        if self.thresholds is None or self.values is None:
            raise RuntimeError("isotonic calibrator is not fitted")
        return np.clip(np.interp(_scores(x), self.thresholds, self.values), 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        if self.thresholds is None or self.values is None:
            raise RuntimeError("isotonic calibrator is not fitted")
        return {
            "kind": self.kind,
            "thresholds": self.thresholds.tolist(),
            "values": self.values.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IsotonicCalibrator:
        calibrator = cls()
        calibrator._check_kind(data)
        thresholds = np.asarray(_float_list(data, "thresholds"))
        values = np.asarray(_float_list(data, "values"))
        if thresholds.size == 0 or thresholds.size != values.size:
            raise ValueError("isotonic thresholds and values must be equal, non-empty lists")
        if np.any(np.diff(thresholds) < 0) or np.any(np.diff(values) < 0):
            raise ValueError("isotonic thresholds and values must be non-decreasing")
        calibrator.thresholds, calibrator.values = thresholds, values
        return calibrator


def _pool_adjacent_violators(
    means: FloatArray, weights: FloatArray
) -> list[tuple[int, int, float]]:
    """Blocks ``(start, stop, value)`` of the weighted non-decreasing least-squares fit."""
    starts: list[int] = []
    sums: list[float] = []
    totals: list[float] = []
    for index, (mean, weight) in enumerate(zip(means.tolist(), weights.tolist(), strict=True)):
        starts.append(index)
        sums.append(mean * weight)
        totals.append(weight)
        # merge backwards while the last block is below the one before it
        while len(starts) > 1 and sums[-1] / totals[-1] <= sums[-2] / totals[-2]:
            last_sum, last_total = sums.pop(), totals.pop()
            sums[-1] += last_sum
            totals[-1] += last_total
            starts.pop()
    stops = [*starts[1:], len(means)]
    return [(a, b, s / t) for a, b, s, t in zip(starts, stops, sums, totals, strict=True)]


class PlattCalibrator(Calibrator):
    """``sigmoid(a*x + b)`` on a single raw score."""

    kind = "platt"

    def __init__(self, l2: float = 1e-3) -> None:
        self.l2 = l2
        self.a: float | None = None
        self.b: float | None = None

    def fit(self, x: npt.ArrayLike, y: npt.ArrayLike) -> PlattCalibrator:
        scores = _scores(x)
        labels = _labels(y, scores.size)
        mean, std = _standardise(scores)
        weight, intercept = _fit_logistic(((scores - mean) / std)[:, None], labels, self.l2)
        self.a = float(weight / std)
        self.b = float(intercept - weight * mean / std)
        return self

    def predict(self, x: npt.ArrayLike) -> FloatArray:
        if self.a is None or self.b is None:
            raise RuntimeError("platt calibrator is not fitted")
        return _sigmoid(self.a * _scores(x) + self.b)

    def to_dict(self) -> dict[str, Any]:
        if self.a is None or self.b is None:
            raise RuntimeError("platt calibrator is not fitted")
        return {"kind": self.kind, "a": self.a, "b": self.b, "l2": self.l2}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlattCalibrator:
        calibrator = cls(l2=_float(data, "l2") if "l2" in data else 1e-3)
        calibrator._check_kind(data)
        calibrator.a, calibrator.b = _float(data, "a"), _float(data, "b")
        return calibrator


class LogisticCalibrator(Calibrator):
    """``sigmoid(w . z + b)`` on standardised feature vectors (rows of a 2-D array)."""

    kind = "logistic"

    def __init__(self, l2: float = 1e-2) -> None:
        self.l2 = l2
        self.mean: FloatArray | None = None
        self.std: FloatArray | None = None
        self.coef: FloatArray | None = None
        self.intercept: float | None = None

    def fit(self, x: npt.ArrayLike, y: npt.ArrayLike) -> LogisticCalibrator:
        features = _feature_rows(x)
        labels = _labels(y, features.shape[0])
        self.mean, self.std = _standardise(features)
        weights = _fit_logistic((features - self.mean) / self.std, labels, self.l2)
        self.coef, self.intercept = weights[:-1], float(weights[-1])
        return self

    def predict(self, x: npt.ArrayLike) -> FloatArray:
        if self.mean is None or self.std is None or self.coef is None or self.intercept is None:
            raise RuntimeError("logistic calibrator is not fitted")
        features = _feature_rows(x)
        if features.shape[1] != self.coef.size:
            raise ValueError(f"expected {self.coef.size} features, got {features.shape[1]}")
        return _sigmoid(((features - self.mean) / self.std) @ self.coef + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        if self.mean is None or self.std is None or self.coef is None or self.intercept is None:
            raise RuntimeError("logistic calibrator is not fitted")
        return {
            "kind": self.kind,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "l2": self.l2,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogisticCalibrator:
        calibrator = cls(l2=_float(data, "l2") if "l2" in data else 1e-2)
        calibrator._check_kind(data)
        mean = np.asarray(_float_list(data, "mean"))
        std = np.asarray(_float_list(data, "std"))
        coef = np.asarray(_float_list(data, "coef"))
        if mean.size == 0 or not (mean.size == std.size == coef.size):
            raise ValueError("logistic mean, std and coef must be equal, non-empty lists")
        if np.any(std <= 0):
            raise ValueError("logistic std must be positive")
        calibrator.mean, calibrator.std, calibrator.coef = mean, std, coef
        calibrator.intercept = _float(data, "intercept")
        return calibrator


CALIBRATORS: dict[str, type[Calibrator]] = {
    IsotonicCalibrator.kind: IsotonicCalibrator,
    PlattCalibrator.kind: PlattCalibrator,
    LogisticCalibrator.kind: LogisticCalibrator,
}


def load_calibrator(data: dict[str, Any]) -> Calibrator:
    """Rebuild a calibrator from its ``to_dict()`` form, by its ``kind``."""
    if not isinstance(data, dict):
        raise ValueError("a calibrator must be a JSON object")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in CALIBRATORS:
        raise ValueError(f"unknown calibrator kind {kind!r}; known: {sorted(CALIBRATORS)}")
    return CALIBRATORS[kind].from_dict(data)

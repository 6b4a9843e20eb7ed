"""The merge methods, on one tensor at a time: each takes the same tensor of every input
model (and of the base, for the methods that merge task vectors) and returns the merged one.

* ``linear``: the weighted mean of the inputs (model soups, WiSE-FT interpolation).
* ``slerp``: spherical interpolation between two inputs at ``t``, treating each tensor as
  one vector; nearly parallel tensors fall back to linear interpolation.
* ``task_arithmetic``: base + Σ weightᵢ · (inputᵢ - base) (Ilharco et al., 2023).
* ``ties``: each task vector trimmed to its ``density`` largest magnitudes, a sign elected
  per element by the sign of the summed weighted task vectors, and the weighted mean of the
  values that agree with it added to the base (Yadav et al., 2023).
* ``dare_ties``: each task vector's elements dropped at random with probability
  ``1 - density`` and the rest rescaled by ``1 / density`` (Yu et al., 2024), then merged as
  TIES without the trim. The drops come from a generator seeded by ``seed`` and the
  tensor's name, so the same recipe gives the same bytes.

Computation is in float32 whatever the inputs' type (the caller dequantizes and writes).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["dare_ties", "linear", "slerp", "task_arithmetic", "ties"]

Tensor = npt.NDArray[np.float32]
_PARALLEL = 0.9995  # |cos| above this: the tensors are parallel, interpolate linearly
_CHUNK = 1 << 20  # elements per slice of a float64 dot product


def _f32(x: npt.ArrayLike) -> Tensor:
    return np.asarray(x, dtype=np.float32)


def _stack(tensors: Sequence[npt.ArrayLike], base: npt.ArrayLike | None = None) -> Tensor:
    return np.stack(_checked(tensors, base))


def _weights(weights: Sequence[float] | None, n: int) -> npt.NDArray[np.float32]:
    w = np.full(n, 1.0, dtype=np.float32) if weights is None else np.asarray(weights, np.float32)
    if w.shape != (n,) or not np.all(np.isfinite(w)):
        raise ValueError(f"need {n} finite weights, got {weights!r}")
    return w


def _checked(tensors: Sequence[npt.ArrayLike], base: npt.ArrayLike | None = None) -> list[Tensor]:
    """The inputs as float32 arrays of one shape (no copy when they already are)."""
    arrays = [np.asarray(t, dtype=np.float32) for t in tensors]
    if not arrays:
        raise ValueError("a merge needs at least one input tensor")
    shape = arrays[0].shape if base is None else np.shape(base)
    for index, array in enumerate(arrays):
        if array.shape != shape:
            raise ValueError(f"input {index} has shape {array.shape}, expected {shape}")
    return arrays


def _dot(a: Tensor, b: Tensor) -> float:
    """Σ aᵢbᵢ in float64, a slice at a time (no float64 copy of a whole tensor)."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    return sum(
        float(np.dot(fa[i : i + _CHUNK].astype(np.float64), fb[i : i + _CHUNK].astype(np.float64)))
        for i in range(0, fa.size, _CHUNK)
    )


def _mix(coefficients: Sequence[float], arrays: Sequence[Tensor]) -> Tensor:
    """Σ cᵢ xᵢ accumulated in one float32 array (one temporary at a time)."""
    out: Tensor = np.multiply(arrays[0], np.float32(coefficients[0]), dtype=np.float32)
    for c, x in zip(coefficients[1:], arrays[1:], strict=True):
        out += np.float32(c) * x
    return out


def linear(
    tensors: Sequence[npt.ArrayLike], weights: Sequence[float] | None = None, normalize: bool = True
) -> Tensor:
    """Σ wᵢ xᵢ, divided by Σ wᵢ when ``normalize``."""
    x = _checked(tensors)
    w = _weights(weights, len(x)).astype(np.float64)
    if normalize:
        if w.sum() == 0:
            raise ValueError("the weights of a normalized linear merge sum to 0")
        w = w / w.sum()
    return _mix(list(w), x)


def slerp(a: npt.ArrayLike, b: npt.ArrayLike, t: float) -> Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1)."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"slerp t must be in [0, 1], got {t}")
    xa, xb = _checked([a, b])
    na, nb = np.sqrt(_dot(xa, xa)), np.sqrt(_dot(xb, xb))
    if na == 0.0 or nb == 0.0:
        return _mix([1 - t, t], [xa, xb])
    cos = float(np.clip(_dot(xa, xb) / (na * nb), -1.0, 1.0))
    if abs(cos) > _PARALLEL:
        return _mix([1 - t, t], [xa, xb])
    theta = np.arccos(cos)
    sin = np.sin(theta)
    return _mix([np.sin((1 - t) * theta) / sin, np.sin(t * theta) / sin], [xa, xb])


def task_arithmetic(
    base: npt.ArrayLike, tensors: Sequence[npt.ArrayLike], weights: Sequence[float] | None = None
) -> Tensor:
    """base + Σ wᵢ (xᵢ - base)."""
    b = np.asarray(base, dtype=np.float32)
    x = _checked(tensors, b)
    w = _weights(weights, len(x))
    out: Tensor = b.copy()
    for wi, xi in zip(w, x, strict=True):
        out += wi * (xi - b)
    return out


def _trim(delta: Tensor, density: float) -> Tensor:
    """``delta`` with all but its ``density`` share of largest magnitudes set to 0: the
    largest ``max(1, ⌊density · size⌋)``, as mergekit counts them (ties at the cut are
    kept by their order in the tensor)."""
    keep = max(1, int(density * delta.size))
    if keep >= delta.size:
        return delta
    flat = np.abs(delta).ravel()
    kept = np.argpartition(flat, delta.size - keep, kind="introselect")[delta.size - keep :]
    trimmed = np.zeros(delta.size, dtype=np.float32)
    trimmed[kept] = delta.ravel()[kept]
    return trimmed.reshape(delta.shape)


def _elect(base: Tensor, deltas: Tensor, w: npt.NDArray[np.float32]) -> Tensor:
    """TIES's sign election and disjoint mean of the weighted task vectors."""
    shaped = w.reshape((-1,) + (1,) * (deltas.ndim - 1))
    weighted = deltas * shaped
    sign = np.sign(weighted.sum(axis=0))
    agree = (np.sign(weighted) == sign) & (weighted != 0)
    total = np.where(agree, weighted, 0.0).sum(axis=0)
    share = np.where(agree, shaped, 0.0).sum(axis=0)  # the agreeing inputs' weights
    merged = np.divide(total, share, out=np.zeros_like(total), where=share != 0)
    return _f32(base + merged)


def _density(density: float) -> float:
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return density


def ties(
    base: npt.ArrayLike,
    tensors: Sequence[npt.ArrayLike],
    weights: Sequence[float] | None = None,
    density: float = 0.5,
) -> Tensor:
    """Trim, elect sign, disjoint merge (see the module docstring)."""
    b = np.asarray(base, dtype=np.float32)
    deltas = _stack(tensors, b) - b
    keep = _density(density)
    trimmed = np.stack([_trim(d, keep) for d in deltas])
    return _elect(b, trimmed, _weights(weights, len(deltas)))


def dare_ties(
    base: npt.ArrayLike,
    tensors: Sequence[npt.ArrayLike],
    weights: Sequence[float] | None = None,
    density: float = 0.5,
    *,
    seed: int = 0,
    name: str = "",
) -> Tensor:
    """Random drop and rescale, then TIES's sign election and disjoint merge."""
    b = np.asarray(base, dtype=np.float32)
    deltas = _stack(tensors, b) - b
    keep = _density(density)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    kept = rng.random(deltas.shape) < keep
    rescaled = np.where(kept, deltas / keep, 0.0).astype(np.float32)
    return _elect(b, rescaled, _weights(weights, len(deltas)))

"""The merge methods against plain element-by-element references on small tensors."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from ridgeline_core.merge import dare_ties, linear, slerp, task_arithmetic, ties

RNG = np.random.default_rng(20)
BASE = RNG.normal(size=(4, 6)).astype(np.float32)
A = BASE + RNG.normal(scale=0.5, size=(4, 6)).astype(np.float32)
B = BASE + RNG.normal(scale=0.5, size=(4, 6)).astype(np.float32)


def _ties_reference(base, inputs, weights, keep_masks):  # type: ignore[no-untyped-def]
    """TIES element by element: trimmed deltas, elected sign, weighted mean of agreeing."""
    out = base.copy()
    for index in np.ndindex(base.shape):
        deltas = [
            w * (x[index] - base[index]) if mask[index] else 0.0
            for x, w, mask in zip(inputs, weights, keep_masks, strict=True)
        ]
        sign = np.sign(sum(deltas))
        agreeing = [
            (d, w) for d, w in zip(deltas, weights, strict=True) if d != 0 and np.sign(d) == sign
        ]
        if agreeing:
            out[index] += sum(d for d, _ in agreeing) / sum(w for _, w in agreeing)
    return out


def test_linear_is_the_weighted_mean() -> None:
    merged = linear([A, B], [3.0, 1.0])
    assert merged.dtype == np.float32
    np.testing.assert_allclose(merged, (3 * A + B) / 4, rtol=1e-6)
    np.testing.assert_allclose(linear([A, B], [1.0, 1.0], normalize=False), A + B, rtol=1e-6)
    np.testing.assert_array_equal(linear([A]), A)  # one model merged with itself


def test_slerp_endpoints_and_midpoint() -> None:
    np.testing.assert_allclose(slerp(A, B, 0.0), A, atol=1e-6)
    np.testing.assert_allclose(slerp(A, B, 1.0), B, atol=1e-6)
    np.testing.assert_allclose(slerp(A, A, 0.5), A, atol=1e-6)  # parallel: linear
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])  # a quarter turn
    np.testing.assert_allclose(slerp(a, b, 0.5), [math.sqrt(0.5)] * 2, atol=1e-6)
    mid = slerp(A, B, 0.5)  # on the arc: its norm lies between the ends', unlike linear's
    va, vb, vm = (np.linalg.norm(x) for x in (A, B, mid))
    assert min(va, vb) - 1e-4 <= vm <= max(va, vb) + 1e-4


def test_task_arithmetic_adds_weighted_task_vectors() -> None:
    merged = task_arithmetic(BASE, [A, B], [0.5, 2.0])
    np.testing.assert_allclose(merged, BASE + 0.5 * (A - BASE) + 2.0 * (B - BASE), rtol=1e-5)
    np.testing.assert_allclose(task_arithmetic(BASE, [A], [0.0]), BASE)


def test_ties_trims_elects_the_sign_and_means_what_agrees() -> None:
    # a hand-made sign conflict: +3 and -1 elect +, so the mean of what agrees is 3
    base = np.zeros(3, dtype=np.float32)
    one = np.array([3.0, -2.0, 0.5], dtype=np.float32)
    two = np.array([-1.0, -2.0, -0.5], dtype=np.float32)
    np.testing.assert_allclose(ties(base, [one, two], density=1.0), [3.0, -2.0, 0.0])
    # against the element-by-element reference, with weights and trimming
    weights = [1.0, 0.5]
    for density in (1.0, 0.5, 0.2):
        masks = []
        for x in (A, B):
            delta = np.abs(x - BASE).ravel()
            keep = max(1, int(density * delta.size))
            threshold = np.sort(delta)[delta.size - keep]
            masks.append(np.abs(x - BASE) >= threshold)
        expected = _ties_reference(BASE, [A, B], weights, masks)
        np.testing.assert_allclose(ties(BASE, [A, B], weights, density), expected, atol=1e-5)


def test_dare_ties_drops_at_random_with_its_seed_and_rescales() -> None:
    first = dare_ties(BASE, [A, B], density=0.5, seed=1, name="blk.0.attn_q.weight")
    again = dare_ties(BASE, [A, B], density=0.5, seed=1, name="blk.0.attn_q.weight")
    np.testing.assert_array_equal(first, again)  # the same recipe, the same bytes
    other = dare_ties(BASE, [A, B], density=0.5, seed=1, name="blk.1.attn_q.weight")
    assert not np.array_equal(first, other)  # each tensor draws its own drops
    # the reference: the same seeded drops, rescaled by 1/density, merged as TIES untrimmed
    rng = np.random.default_rng([1, zlib.crc32(b"blk.0.attn_q.weight")])
    kept = rng.random((2, *BASE.shape)) < 0.5
    rescaled = [
        BASE + np.where(k, (x - BASE) / 0.5, 0.0) for x, k in zip((A, B), kept, strict=True)
    ]
    expected = _ties_reference(BASE, rescaled, [1.0, 1.0], [np.ones(BASE.shape, bool)] * 2)
    np.testing.assert_allclose(first, expected, atol=1e-5)
    # keeping everything is TIES without the trim
    np.testing.assert_allclose(
        dare_ties(BASE, [A, B], density=1.0), ties(BASE, [A, B], density=1.0)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear([A, BASE[:2]]), r"input 1 has shape \(2, 6\), expected \(4, 6\)"),
        (lambda: task_arithmetic(BASE, [A[:, :3]]), r"input 0 has shape \(4, 3\)"),
        (lambda: linear([]), "at least one input"),
        (lambda: linear([A, B], [1.0]), "need 2 finite weights"),
        (lambda: linear([A, B], [1.0, float("nan")]), "need 2 finite weights"),
        (lambda: linear([A, B], [1.0, -1.0]), "sum to 0"),
        (lambda: slerp(A, B, 1.5), r"t must be in \[0, 1\]"),
        (lambda: ties(BASE, [A], density=0.0), r"density must be in \(0, 1\]"),
        (lambda: dare_ties(BASE, [A], density=1.2), r"density must be in \(0, 1\]"),
    ],
)
def test_bad_merges_are_refused_with_the_reason(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]

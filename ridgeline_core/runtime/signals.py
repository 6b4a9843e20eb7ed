"""Per-token confidence signals from one row of raw logits.

This runs once per generated token, so it is written for speed: six vectorised
passes over the vocabulary into preallocated buffers, no sort and no copy of
the logits (which stay a zero-copy view of llama.cpp's buffer). SmolLM2 has a
49k vocabulary, Gemma 3 262k; see benchmarks/local_generation.py for the cost.

With ``z = logits - max`` and ``S = sum(exp(z))``:

* chosen-token probability ``p = exp(z[token]) / S``
* entropy ``H = log S - sum(exp(z) * z) / S``   (nats)
* margin ``p1 - p2 = (1 - exp(z2)) / S``, ``z2`` the second-largest ``z``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .types import TokenSignals

__all__ = ["SignalComputer"]


class SignalComputer:
    """Computes :class:`TokenSignals`; owns scratch buffers sized to the vocabulary."""

    def __init__(self, n_vocab: int) -> None:
        self._z = np.empty(n_vocab, dtype=np.float32)
        self._e = np.empty(n_vocab, dtype=np.float32)

    def __call__(self, logits: npt.NDArray[np.float32], token: int) -> TokenSignals:
        z, e = self._z, self._e
        top = int(logits.argmax())
        np.subtract(logits, logits[top], out=z)
        np.exp(z, out=e)
        e[top] = 0.0  # sum the rest alone: float32 keeps its precision when S is near 1
        rest = float(e.sum())
        total = 1.0 + rest
        with np.errstate(invalid="ignore"):
            weighted = float(np.dot(e, z))
        if weighted != weighted:  # masked (-inf) logits give 0 * -inf: use finite entries
            finite = np.isfinite(z)
            weighted = float(np.dot(e[finite], z[finite]))
        chosen = float(z[token])
        z[top] = -np.inf
        second = float(z.max())
        return TokenSignals(
            prob=math.exp(chosen) / total,
            entropy=max(0.0, math.log1p(rest) - weighted / total),
            margin=(1.0 - math.exp(second)) / total,
        )

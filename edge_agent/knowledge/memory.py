"""Outcome memory: past prompts whose local answers were judged right or wrong, per model,
and a k-nearest-neighbour estimate of P(right) for a new prompt from the most similar ones.

Outcomes come from calibration data (``edge-agent calibrate --remember``) and from feedback
(``EdgeAgent.feedback``, ``edge-agent feedback``). The pre-route reads the estimate
(edge_agent.routing.preroute).

The estimate for a prompt with unit embedding ``v``, over the model's outcomes ``i`` with
unit embeddings ``u_i`` and outcomes ``y_i`` (1 right, 0 wrong)::

    s_i  = u_i · v                                   (cosine similarity)
    w_i  = clip((s_i - s0) / (1 - s0), 0, 1)         for the k most similar, else 0
    base = (R + 1) / (N + 2)                         (the model's base rate, Laplace)
    P    = (Σ w_i y_i + prior · base) / (Σ w_i + prior)

``s0`` is ``min_similarity``: a past prompt less similar than that says nothing. ``prior``
pseudo-neighbours sit at the base rate, so few or far neighbours (small ``Σ w_i``, the
estimate's ``support``) leave P near the base rate, and many close ones move it to their
own rate. Below ``min_outcomes`` outcomes a model has no estimate.

Storage: a JSONL file, one outcome a line (prompt, model, right, source, time), appended to
as outcomes arrive; the newest outcome of a (model, prompt) replaces older ones, and beyond
``max_entries`` the oldest go (the file is rewritten when it holds too many stale lines).
The embeddings live only in memory: they are recomputed when the file is first read, in
batches (a few hundred prompts take about a second). Not caching them keeps the file
independent of the embedding model: change ``embeddings.model`` or its variant and the
memory still holds, no stale vectors can be mixed with new ones, and there is no second
file to keep in step. The file is read lazily, on the first estimate, and followed after
that: lines another process appends (``edge-agent feedback`` beside a running daemon) are
picked up at the next estimate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..settings import MemorySettings
from .memory_follow import EMBED_BATCH as EMBED_BATCH  # importable from here as before
from .memory_follow import FollowedRows
from .memory_follow import embed_in_batches as embed_in_batches
from .memory_outcome import (
    EmbedFn,
    MemoryEstimate,
    Outcome,
    Source,
    Vectors,
    check_outcomes,
)

__all__ = ["EmbedFn", "MemoryEstimate", "Outcome", "OutcomeMemory", "Source", "Vectors"]


log = logging.getLogger(__name__)


class OutcomeMemory:
    """Judged outcomes of a model's local answers, with their prompts' embeddings.

    ``embed`` turns prompts into unit rows (``Embedder.embed``); it is called only when the
    file is read and for outcomes added without a vector. ``path`` None keeps the memory
    in this process only. Thread-safe.
    """

    def __init__(self, settings: MemorySettings, embed: EmbedFn, path: Path | None) -> None:
        self.settings = settings
        self.path = path
        self._lock = threading.RLock()
        self._followed = FollowedRows(settings, embed, path)

    def estimate(self, model: str, vector: npt.ArrayLike) -> MemoryEstimate | None:
        """P(right) of ``model``'s answer to the prompt embedded as ``vector`` (see the
        module docstring); None while the model has fewer than ``min_outcomes``."""
        with self._lock:
            return self._followed.refresh().estimate(model, vector, self.settings)

    def size(self, model: str | None = None) -> int:
        """Outcomes held for ``model`` (all models: None)."""
        with self._lock:
            return self._followed.refresh().size(model)

    def outcomes(self) -> list[Outcome]:
        """Every outcome held, oldest first."""
        with self._lock:
            return list(self._followed.refresh().outcomes)

    def add(
        self,
        model: str,
        prompt: str,
        right: bool,
        source: Source,
        vector: npt.ArrayLike | None = None,
    ) -> Outcome:
        """Record one judged answer (``vector``: the prompt's embedding, if already made)."""
        outcome = Outcome(prompt, model, bool(right), source, time.time())
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        self.extend([outcome], vectors)
        return outcome

    def extend(self, outcomes: Sequence[Outcome], vectors: npt.ArrayLike | None = None) -> None:
        """Record many judged answers at once (one file write, batched embedding).

        When the file has not been read yet, the outcomes are only appended to it: nothing
        is embedded until an estimate needs the memory."""
        if not outcomes:
            return
        check_outcomes(outcomes)
        with self._lock:
            self._followed.record(outcomes, vectors)

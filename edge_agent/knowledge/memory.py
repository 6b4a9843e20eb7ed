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
from .memory_log import OutcomeLog
from .memory_outcome import (
    EmbedFn,
    MemoryEstimate,
    Outcome,
    Source,
    Vectors,
    check_outcomes,
)
from .memory_rows import OutcomeRows

__all__ = ["EmbedFn", "MemoryEstimate", "Outcome", "OutcomeMemory", "Source", "Vectors"]


log = logging.getLogger(__name__)

EMBED_BATCH = 64  # prompts embedded at once when the file is read


class _FollowedRows:
    """The rows in memory, kept in step with the log file: read on first use, then each
    time before use, what other processes appended (or everything, after a rewrite)."""

    settings: MemorySettings
    _embed: EmbedFn
    _loaded: bool
    _rows: OutcomeRows
    _log: OutcomeLog | None

    def _write(self, outcomes: Sequence[Outcome]) -> None:
        """Append to the file; rewrite it when it holds too many stale lines."""
        if self._log is not None:
            self._log.append(outcomes, self._loaded)
            if self._loaded and self._log.stale_lines(len(self._rows.outcomes)) > 0:
                self._log.rewrite(self._rows.outcomes)

    def _refresh(self) -> None:
        """Read the file on first use; after that, pick up what others appended."""
        log_file = self._log
        if log_file is None:
            return
        change = log_file.change() if self._loaded else "reload"
        if change == "reload":
            self._rows = OutcomeRows(self.settings.max_entries)
            self._insert(log_file.reload())
            self._loaded = True
            if log_file.stale_lines(len(self._rows.outcomes)) > 0:
                log_file.rewrite(self._rows.outcomes)
        elif change == "more":
            self._insert(log_file.read_more())

    def _insert(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            self._rows.insert(outcomes, self._embed_all([o.prompt for o in outcomes]))

    def _embed_all(self, prompts: Sequence[str]) -> Vectors:
        return embed_in_batches(self._embed, prompts)


class OutcomeMemory(_FollowedRows):
    """Judged outcomes of a model's local answers, with their prompts' embeddings.

    ``embed`` turns prompts into unit rows (``Embedder.embed``); it is called only when the
    file is read and for outcomes added without a vector. ``path`` None keeps the memory
    in this process only. Thread-safe.
    """

    def __init__(self, settings: MemorySettings, embed: EmbedFn, path: Path | None) -> None:
        self.settings = settings
        self.path = path
        self._embed = embed
        self._lock = threading.RLock()
        self._loaded = path is None  # an in-process memory has nothing to read
        self._rows = OutcomeRows(settings.max_entries)
        self._log = None if path is None else OutcomeLog(path, settings.max_entries)

    def estimate(self, model: str, vector: npt.ArrayLike) -> MemoryEstimate | None:
        """P(right) of ``model``'s answer to the prompt embedded as ``vector`` (see the
        module docstring); None while the model has fewer than ``min_outcomes``."""
        with self._lock:
            self._refresh()
            return self._rows.estimate(model, vector, self.settings)

    def size(self, model: str | None = None) -> int:
        """Outcomes held for ``model`` (all models: None)."""
        with self._lock:
            self._refresh()
            return self._rows.size(model)

    def outcomes(self) -> list[Outcome]:
        """Every outcome held, oldest first."""
        with self._lock:
            self._refresh()
            return list(self._rows.outcomes)

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
            if self._loaded:
                self._refresh()
                rows = (
                    self._embed_all([o.prompt for o in outcomes])
                    if vectors is None
                    else np.asarray(vectors, dtype=np.float32).reshape(len(outcomes), -1)
                )
                self._rows.insert(outcomes, rows)
            self._write(outcomes)


def embed_in_batches(embed: EmbedFn, prompts: Sequence[str]) -> Vectors:
    """``embed`` over ``prompts``, EMBED_BATCH at a time (bounded memory for a big file)."""
    parts = [
        np.asarray(embed(prompts[i : i + EMBED_BATCH]), dtype=np.float32)
        for i in range(0, len(prompts), EMBED_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

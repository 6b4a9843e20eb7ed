"""The outcomes held in memory, a row each with its prompt's unit vector, and the
k-nearest-neighbour estimate over them (the formula is in :mod:`.memory`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import InvalidRequestError

from ..settings import MemorySettings
from .memory_outcome import MemoryEstimate, Outcome, Vectors
from .vectors import VectorIndex

__all__ = ["OutcomeRows"]


class OutcomeRows:
    """The outcomes held in memory: one row each, with its prompt's unit vector, whether it
    was right and its model; the newest judgement of a (model, prompt) replaces older ones,
    and beyond ``max_entries`` the oldest go."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.outcomes: list[Outcome] = []
        self._index: dict[tuple[str, str], int] = {}  # (model, prompt) -> row
        self._vectors = _empty_index(0)  # row i: outcome i's prompt, "right", model id
        self._models: dict[str, int] = {}

    def size(self, model: str | None) -> int:
        if model is None:
            return len(self.outcomes)
        model_id = self._models.get(model)
        return 0 if model_id is None else int((self._vectors.field("model") == model_id).sum())

    def estimate(
        self, model: str, vector: npt.ArrayLike, s: MemorySettings
    ) -> MemoryEstimate | None:
        model_id = self._models.get(model)
        if model_id is None or not self.outcomes:
            return None
        mine = self._vectors.field("model") == model_id
        count = int(mine.sum())
        if count < s.min_outcomes:
            return None
        v = _query(vector, self._vectors.dim)
        return _estimate(self._vectors, mine, count, v, s)

    def insert(self, outcomes: Sequence[Outcome], vectors: Vectors) -> None:
        vectors = _unit_rows(vectors, len(outcomes))
        stale = {self._index[key] for o in outcomes if (key := (o.model, o.prompt)) in self._index}
        if stale:
            self._drop(sorted(stale))
        self._vectors = _sized_for(self._vectors, vectors, len(self.outcomes))
        start = self._vectors.append(vectors)
        right, model_ids = self._vectors.field("right"), self._vectors.field("model")
        for row, o in enumerate(outcomes, start):
            right[row] = o.right
            model_ids[row] = self._models.setdefault(o.model, len(self._models))
            self._index[(o.model, o.prompt)] = row
        self.outcomes.extend(outcomes)
        over = len(self.outcomes) - self.max_entries
        if over > 0:
            self._drop(list(range(over)))

    def _drop(self, rows: list[int]) -> None:
        """Remove ``rows`` (ascending), keeping the order of the rest."""
        keep = np.ones(len(self.outcomes), dtype=bool)
        keep[rows] = False
        self._vectors.keep(keep)
        self.outcomes = [o for o, k in zip(self.outcomes, keep, strict=True) if k]
        self._index = {(o.model, o.prompt): i for i, o in enumerate(self.outcomes)}


def _empty_index(dim: int) -> VectorIndex:
    return VectorIndex(dim, (("right", np.bool_), ("model", np.int32)))


def _sized_for(index: VectorIndex, vectors: Vectors, held: int) -> VectorIndex:
    """``index`` if it is as wide as ``vectors``; else, while it holds nothing (``held``
    outcomes), a new empty one that is: a memory's vectors all have one width."""
    if index.dim == vectors.shape[1]:
        return index
    if held:
        raise InvalidRequestError(
            f"vectors have {vectors.shape[1]} dimensions; the memory's have {index.dim}"
        )
    return _empty_index(vectors.shape[1])


def _query(vector: npt.ArrayLike, dim: int) -> Vectors:
    """``vector`` as a unit row, checked to be as wide as the memory's (``dim``)."""
    v = _unit(np.asarray(vector, dtype=np.float32).reshape(-1))
    if v.shape[0] != dim:
        raise InvalidRequestError(f"vector has {v.shape[0]} dimensions; the memory's have {dim}")
    return v


def _unit(v: Vectors) -> Vectors:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 and math.isfinite(norm) else v


def _unit_rows(vectors: Vectors, count: int) -> Vectors:
    """``vectors`` as unit rows, checked to be ``count`` of them (one per outcome)."""
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise InvalidRequestError(
            f"{count} outcomes need as many vectors, got shape {vectors.shape}"
        )
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norms > 0, vectors / np.where(norms > 0, norms, 1), vectors).astype(np.float32)


def _estimate(
    vectors: VectorIndex, mine: npt.NDArray[np.bool_], count: int, v: Vectors, s: MemorySettings
) -> MemoryEstimate:
    """The estimate over the rows ``mine`` (a model's ``count`` outcomes) for the unit
    vector ``v``: the k nearest, weighted by similarity, shrunk toward the base rate."""
    rights = int(vectors.field("right")[mine].sum())
    rows, similarity = vectors.nearest(v, s.k, where=mine)
    right = vectors.field("right")[rows]
    base = (rights + 1) / (count + 2)
    weight = np.clip((similarity - s.min_similarity) / (1 - s.min_similarity), 0.0, 1.0)
    support = float(weight.sum())
    return MemoryEstimate(
        probability=(float(weight @ right) + s.prior * base) / (support + s.prior),
        base_rate=base,
        support=support,
        max_similarity=float(similarity.max()),
        neighbours=int((weight > 0).sum()),
        outcomes=count,
    )

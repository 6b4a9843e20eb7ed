"""Prompt embeddings held in memory as the rows of one float32 matrix, searched by cosine.

The semantic cache and the outcome memory compare a new prompt with every stored one. At
their sizes (thousands of rows, a few hundred dimensions) one matrix-vector product is exact
and takes about a millisecond, so there is no approximate index to tune or keep in step.
Rows are unit vectors, normalised by the caller (the cache refuses a zero vector, the memory
keeps it), so a dot product is the cosine similarity.

Each row can carry named fields (an entry id, a time, a label) that move with it when rows
are removed or compacted, so a caller keeps no parallel arrays in step.
The matrix keeps spare capacity: adding a row is amortised O(dim).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Fields", "Vector", "VectorIndex", "VectorRows"]

Fields = Sequence[tuple[str, npt.DTypeLike]]  # (name, numpy dtype) of each field a row carries
Vector = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float32]
Rows = npt.NDArray[np.intp]
Mask = npt.NDArray[np.bool_]

_ALIGN = 64  # bytes: a cache line
_MIN_CAPACITY = 4  # a cache keeps one index per scope, and conversations make many


class _RowStorage:
    """The rows: a float32 matrix with spare capacity, and a contiguous array per field
    whose values move with their row."""

    def __init__(self, dim: int, fields: Fields = (), capacity: int = 0) -> None:
        if dim < 0 or capacity < 0:
            raise ValueError(f"dim and capacity must be >= 0, got {dim} and {capacity}")
        self._n = 0
        self._matrix = _aligned_matrix(capacity, dim)
        self._fields = _Columns(fields, capacity)

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[1])

    @property
    def capacity(self) -> int:
        return int(self._matrix.shape[0])

    @property
    def vectors(self) -> npt.NDArray[np.float32]:
        """The rows held (a view: it changes with the index)."""
        return self._matrix[: self._n]

    def field(self, name: str) -> npt.NDArray[Any]:
        """One field's values, a row each (a writable view: assign to set them)."""
        return self._fields.arrays[name][: self._n]

    def _check(self, row: int) -> int:
        if not 0 <= row < self._n:
            raise IndexError(f"row {row} is not in an index of {self._n} rows")
        return row

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(_MIN_CAPACITY, 2 * needed)
        matrix = _aligned_matrix(capacity, self.dim)
        matrix[: self._n] = self._matrix[: self._n]
        self._matrix = matrix
        self._fields.grow(capacity, self._n)


class VectorRows(_RowStorage):
    """Rows added, replaced and removed (their fields move with them)."""

    def append(self, vectors: npt.ArrayLike) -> int:
        """Add rows (a 2-D array of unit vectors); returns the first new row. Their fields
        are unset until the caller assigns them through :meth:`field`."""
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"expected rows of {self.dim} dimensions, got shape {rows.shape}")
        start, end = self._n, self._n + rows.shape[0]
        self._reserve(end)
        self._matrix[start:end] = rows
        self._n = end
        return start

    def replace(self, row: int, vector: npt.ArrayLike) -> None:
        """Put another vector in ``row`` (its fields stay)."""
        self._matrix[self._check(row)] = vector

    def swap_remove(self, row: int) -> None:
        """Remove ``row`` by moving the last row (and its fields) into it: O(dim), but the
        order of the rows changes."""
        last = self._n - 1
        if self._check(row) != last:
            self._matrix[row] = self._matrix[last]
            self._fields.move(last, row)
        self._n = last

    def keep(self, mask: npt.ArrayLike) -> None:
        """Keep the rows where ``mask`` is true, in their order; the rest go."""
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != (self._n,):
            raise ValueError(f"the mask has shape {keep.shape}, the index {self._n} rows")
        kept = int(keep.sum())
        self._matrix[:kept] = self._matrix[: self._n][keep]
        self._fields.compact(keep, self._n)
        self._n = kept


class _Columns:
    """The fields, one contiguous array each (comparing a whole field is a tight loop)."""

    def __init__(self, fields: Fields, capacity: int) -> None:
        self.arrays = {name: np.empty(capacity, dtype=dtype) for name, dtype in fields}

    def move(self, src: int, dst: int) -> None:
        for values in self.arrays.values():
            values[dst] = values[src]

    def compact(self, keep: Mask, n: int) -> None:
        """The values of the first ``n`` rows where ``keep`` is true, moved to the front."""
        kept = int(keep.sum())
        for values in self.arrays.values():
            values[:kept] = values[:n][keep]

    def grow(self, capacity: int, n: int) -> None:
        for name, values in self.arrays.items():
            grown = np.empty(capacity, dtype=values.dtype)
            grown[:n] = values[:n]
            self.arrays[name] = grown


class VectorIndex(VectorRows):
    """Unit vectors of ``dim`` dimensions, each row with a value of every one of ``fields``,
    searched by cosine similarity."""

    def similarities(self, query: Vector) -> Scores:
        """The cosine similarity of a unit ``query`` to every row (a new array)."""
        return self._matrix[: self._n] @ query

    def best(self, query: Vector, where: Mask | None = None) -> tuple[int, float] | None:
        """The row most similar to ``query`` among those ``where`` is true (all: None) and
        its similarity; the lowest such row on a tie. None when there is no candidate."""
        scores = self.similarities(query)
        if where is not None:
            if not where.any():
                return None
            scores[~where] = -np.inf
        if scores.size == 0:
            return None
        row = int(np.argmax(scores))
        return row, float(scores[row])

    def nearest(self, query: Vector, k: int, where: Mask | None = None) -> tuple[Rows, Scores]:
        """The ``k`` rows most similar to ``query`` among those ``where`` is true (all:
        None), and their similarities. Not sorted: all candidates in row order when there
        are no more than ``k``, else numpy's ``argpartition`` order (and its choice on a tie
        at the k-th place)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.similarities(query)
        if where is None:
            rows = np.arange(scores.size)
        else:
            rows, scores = np.flatnonzero(where), scores[where]
        if scores.size <= k:
            return rows, scores
        pick = np.argpartition(-scores, k - 1)[:k]
        return rows[pick], scores[pick]


def _aligned_matrix(rows: int, dim: int) -> npt.NDArray[np.float32]:
    """An uninitialised float32 matrix starting on a cache line: the BLAS matrix-vector
    product is about 10% faster than on numpy's default 16-byte alignment."""
    buffer = np.empty(rows * dim * 4 + _ALIGN, dtype=np.uint8)
    start = -buffer.ctypes.data % _ALIGN
    return buffer[start : start + rows * dim * 4].view(np.float32).reshape(rows, dim)

"""The answer cache's vectors in memory: one matrix per scope, loaded on its first lookup
(from live entries only), kept in step with this process's writes, forgotten when empty
(conversations make many scopes) or when another process changed what can match."""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .cache_sql import transaction
from .vectors import VectorIndex

__all__ = ["ScopeIndex", "Scopes", "is_time", "well_formed"]

log = logging.getLogger("edge_agent.knowledge.cache")

Vector = npt.NDArray[np.float32]


class ScopeIndex:
    """One scope's vectors, each row with its entry's id and creation time, and the row of
    each entry. Removing swaps the last row into the hole (the order of rows decides ties)."""

    _FIELDS = (("id", np.int64), ("created", np.float64))

    def __init__(self, dim: int, capacity: int) -> None:
        self._vectors = VectorIndex(dim, self._FIELDS, capacity)
        self._rows: dict[int, int] = {}  # entry id -> row

    @property
    def size(self) -> int:
        return len(self._vectors)

    @classmethod
    def from_rows(cls, dim: int, rows: list[tuple[int, bytes, float]]) -> ScopeIndex:
        n = len(rows)
        index = cls(dim, max(4, n + n // 4))
        vectors = index._vectors
        vectors.append(np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(n, dim))
        vectors.field("id")[:] = [r[0] for r in rows]
        vectors.field("created")[:] = [r[2] for r in rows]
        index._rows = {int(entry_id): row for row, (entry_id, _, _) in enumerate(rows)}
        return index

    def add(self, entry_id: int, vector: Vector, created: float) -> None:
        row = self._rows.get(entry_id)
        if row is None:
            row = self._vectors.append(vector[np.newaxis])
            self._rows[entry_id] = row
            self._vectors.field("id")[row] = entry_id
        else:
            self._vectors.replace(row, vector)
        self._vectors.field("created")[row] = created

    def remove(self, entry_id: int) -> None:
        row = self._rows.pop(entry_id, None)
        if row is None:
            return
        self._vectors.swap_remove(row)
        if row < len(self._vectors):  # the last row moved into the hole
            self._rows[int(self._vectors.field("id")[row])] = row

    def search(self, query: Vector, fresh_after: float) -> tuple[list[int], int | None, float]:
        """(expired entry ids, the best live entry's id or None, its score)."""
        stale = self._vectors.field("created") <= fresh_after
        expired: list[int] = []
        live = None
        if stale.any():
            expired = [int(i) for i in self._vectors.field("id")[stale]]
            live = ~stale
        best = self._vectors.best(query, where=live)
        if best is None:
            return expired, None, -math.inf
        row, score = best
        return expired, int(self._vectors.field("id")[row]), score


class Scopes:
    """The loaded, non-empty scopes of one cache file."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self._path, self._clock = path, clock
        self._indexes: dict[str, ScopeIndex] = {}

    def get(
        self, conn: sqlite3.Connection, scope: str, dim: int | None, ttl_s: float
    ) -> ScopeIndex | None:
        """The scope's matrix, loaded on first use; None when the scope has no live
        entries."""
        index = self._indexes.get(scope)
        if index is not None or dim is None:
            return index
        rows = conn.execute(
            "SELECT id, vector, created FROM entries WHERE scope = ? AND created > ?",
            (scope, self._clock() - ttl_s),
        ).fetchall()
        good = [r for r in rows if well_formed(r[1], r[2], dim)]
        if len(good) < len(rows):
            bad = [(r[0],) for r in rows if not well_formed(r[1], r[2], dim)]
            log.warning("semantic cache %s: dropped %d malformed entries", self._path, len(bad))
            with transaction(conn):
                conn.executemany("DELETE FROM entries WHERE id = ?", bad)
            rows = good
        if not rows:
            return None
        index = ScopeIndex.from_rows(dim, rows)
        self._indexes[scope] = index
        return index

    def loaded(self, scope: str) -> ScopeIndex | None:
        return self._indexes.get(scope)

    def forget(self, scope: str, entry_id: int) -> None:
        index = self._indexes.get(scope)
        if index is not None:
            index.remove(entry_id)
            if index.size == 0:
                del self._indexes[scope]

    def drop_if_empty(self, scope: str) -> None:
        index = self._indexes.get(scope)
        if index is not None and index.size == 0:
            del self._indexes[scope]

    def clear(self) -> None:
        self._indexes.clear()


def is_time(value: object) -> bool:
    """A finite number of seconds: what ``created`` and ``used`` must hold."""
    return isinstance(value, int | float) and math.isfinite(value)


def well_formed(vector: object, created: object, dim: int) -> bool:
    """A row's vector is ``dim`` float32 values and its creation time is a time."""
    return isinstance(vector, bytes) and len(vector) == dim * 4 and is_time(created)

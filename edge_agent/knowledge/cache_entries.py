"""The semantic cache's entries: finding the best live one for a prompt (and taking it as
a hit), storing one (sweeping expired entries, evicting the least recently used), and
clearing them all. Each runs on the cache's connection under its lock (``CacheGuard``)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .cache_meta import CacheMeta
from .cache_scopes import Scopes, is_time
from .cache_sql import scalar, transaction, upsert

__all__ = ["CacheHit", "CacheLimits", "EntryLookup", "EntryWriter"]

log = logging.getLogger("edge_agent.knowledge.cache")

Vector = npt.NDArray[np.float32]
# An identical prompt scores 0.99999994 in float32, so similarity=1.0 would never hit.
_ROUNDING = 1e-6


@dataclass(frozen=True)
class CacheHit:
    prompt: str  # the cached prompt that matched
    similarity: float  # cosine similarity to the new prompt
    age_s: float  # since the answer was stored
    answer: dict[str, Any]  # what put() stored


@dataclass(frozen=True)
class CacheLimits:
    """What may match and for how long, and how many entries the file keeps."""

    path: Path
    similarity: float
    ttl_s: float
    max_entries: int

    def __post_init__(self) -> None:
        if not 0 < self.similarity <= 1:
            raise ValueError(f"cache similarity must be in (0, 1], got {self.similarity}")
        if not self.ttl_s > 0:
            raise ValueError(f"cache ttl_s must be > 0 seconds, got {self.ttl_s}")
        if self.max_entries < 1:
            raise ValueError(f"cache max_entries must be >= 1, got {self.max_entries}")


class _Part:
    def __init__(
        self, limits: CacheLimits, meta: CacheMeta, scopes: Scopes, clock: Callable[[], float]
    ) -> None:
        self._limits, self._meta, self._scopes, self._clock = limits, meta, scopes, clock


class EntryLookup(_Part):
    """The best live entry for a query, taken as a hit; expired entries met on the way go.
    Counts this process's hits and misses."""

    hits = 0
    misses = 0

    @property
    def counts(self) -> tuple[int, int]:
        return self.hits, self.misses

    def find(self, conn: sqlite3.Connection, query: Vector, scope: str) -> CacheHit | None:
        hit = self._find(conn, query, scope)
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    def _find(self, conn: sqlite3.Connection, query: Vector, scope: str) -> CacheHit | None:
        limits = self._limits
        self._meta.check_dim(conn, query.size)
        index = self._scopes.get(conn, scope, self._meta.dim, limits.ttl_s)
        if index is None:
            return None
        now = self._clock()
        expired, best_id, score = index.search(query, fresh_after=now - limits.ttl_s)
        hit: CacheHit | None = None
        gone: list[int] = list(expired)
        good = best_id is not None and score >= limits.similarity - _ROUNDING
        if expired or good:
            with transaction(conn):
                conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in expired])
                if best_id is not None and good:
                    hit = _take(conn, best_id, score, now, self._meta, limits.path)
                    if hit is None:
                        gone.append(best_id)
        for entry_id in gone:
            index.remove(entry_id)
        self._scopes.drop_if_empty(scope)
        return hit


class EntryWriter(_Part):
    """Stores and clears entries, keeping the loaded scopes in step."""

    def put(
        self, conn: sqlite3.Connection, prompt: str, scope: str, vector: Vector, text: str
    ) -> None:
        self._meta.check_dim(conn, vector.size)
        now = self._clock()
        with transaction(conn):
            if self._meta.dim is None:
                self._meta.claim_dim(conn, vector.size)
            expired = self._sweep(conn, now)
            self._meta.bump(conn)
            entry_id = upsert(conn, scope, prompt, vector.tobytes(), text, now)
            evicted = self._evict(conn, keep=entry_id)
        for gone_id, gone_scope in [*expired, *evicted]:
            self._scopes.forget(gone_scope, gone_id)
        index = self._scopes.loaded(scope)
        if index is not None:
            index.add(entry_id, vector, now)

    def _sweep(self, conn: sqlite3.Connection, now: float) -> list[tuple[int, str]]:
        """Delete every expired entry (cheap: the index on ``created``). No bump: no process
        matches an expired entry anyway."""
        expired: list[tuple[int, str]] = conn.execute(
            "SELECT id, scope FROM entries WHERE created <= ?", (now - self._limits.ttl_s,)
        ).fetchall()
        conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i, _ in expired])
        return expired

    def _evict(self, conn: sqlite3.Connection, keep: int) -> list[tuple[int, str]]:
        """Delete the least recently used entries beyond ``max_entries`` (never ``keep``)."""
        over = scalar(conn, "SELECT COUNT(*) FROM entries") - self._limits.max_entries
        if over <= 0:
            return []
        evicted: list[tuple[int, str]] = conn.execute(
            "SELECT id, scope FROM entries WHERE id != ? ORDER BY used, id LIMIT ?", (keep, over)
        ).fetchall()
        conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i, _ in evicted])
        return evicted

    def clear(self, conn: sqlite3.Connection) -> int:
        with transaction(conn):
            removed = conn.execute("DELETE FROM entries").rowcount
            conn.execute("DELETE FROM meta WHERE key = 'dim'")
            self._meta.bump(conn)
        self._scopes.clear()
        self._meta.dim = None
        return max(0, removed)


def _take(
    conn: sqlite3.Connection, entry_id: int, score: float, now: float, meta: CacheMeta, path: Path
) -> CacheHit | None:
    """The hit for one entry, its use recorded; None if its row is gone or unreadable."""
    row = conn.execute(
        "SELECT prompt, answer, created FROM entries WHERE id = ?", (entry_id,)
    ).fetchone()
    if row is None:
        return None
    prompt, text, created = row
    try:
        answer = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        answer = None
    if not (isinstance(answer, dict) and isinstance(prompt, str) and is_time(created)):
        log.warning("semantic cache %s: dropped an unreadable entry", path)
        conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
        meta.bump(conn)
        return None
    conn.execute("UPDATE entries SET used = ?, hits = hits + 1 WHERE id = ?", (now, entry_id))
    return CacheHit(
        prompt=prompt,
        similarity=min(1.0, score),
        age_s=max(0.0, now - created),
        answer=answer,
    )

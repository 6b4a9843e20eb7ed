"""The semantic answer cache: a prompt close enough in meaning to an earlier one, asked in the
same scope, gets the earlier answer instead of a model call.

Entries live in one SQLite file (WAL mode, one connection behind a lock), so the agent's
answering threads and separate ``edge-agent`` processes share it. Each scope's vectors are
also held in memory as one float32 matrix, loaded on first lookup and kept in step with this
process's writes, so a lookup is one matrix-vector product. When another process has
committed (``PRAGMA data_version`` moved), a ``generation`` counter in the meta table tells
whether it changed what can match (stored, replaced, evicted, cleared: the matrices are read
again) or only recorded hits and dropped expired entries (the matrices stay).

Why it is built this way:

* Vectors from different encoders cannot be compared, so the encoder's name is stored and a
  file written with another one is emptied on open.
* The cache must never stop an answer. A file SQLite reports as corrupt (or that cannot be
  opened for reading and writing) is moved aside to ``<name>.corrupt-<UTC time>`` and the
  cache starts empty. Any other storage failure is raised as
  :class:`~ridgeline_core.errors.StoreError`, which a caller treats as "no cache this time".
* Answers can be sensitive: a directory the cache creates is 0700, the file is 0600, and a
  ``private`` prompt is neither embedded nor written.
* An answer ages from when it was stored (``ttl_s``); the size bound evicts the entries used
  least recently.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ridgeline_core.closing import Closing
from ridgeline_core.errors import StoreError

from .cache_file import CacheFile
from .cache_meta import CacheMeta
from .cache_scopes import ScopeIndex, Scopes
from .cache_sql import is_corrupt, scalar, transaction, upsert

__all__ = ["CacheHit", "SemanticCache"]

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
Embed = Callable[[str], npt.NDArray[Any]]
_T = TypeVar("_T")

_ScopeIndex = ScopeIndex  # the name tests know it by
# An identical prompt scores 0.99999994 in float32, so similarity=1.0 would never hit.
_ROUNDING = 1e-6


@dataclass(frozen=True)
class CacheHit:
    prompt: str  # the cached prompt that matched
    similarity: float  # cosine similarity to the new prompt
    age_s: float  # since the answer was stored
    answer: dict[str, Any]  # what put() stored


class SemanticCache(Closing):
    """Answers keyed by prompt meaning, per scope, in a SQLite file at ``path``.

    ``embed`` maps a prompt to a 1-D unit vector; ``encoder`` names it (vectors of another
    encoder are incomparable). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        path: Path,
        embed: Embed,
        *,
        encoder: str,
        similarity: float = 0.9,
        ttl_s: float = 7 * 86400,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_limits(similarity, ttl_s, max_entries)
        self.path = Path(path)
        self.encoder = encoder
        self.similarity = float(similarity)
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self._embed = embed
        self._lock = threading.Lock()
        self._scopes = Scopes(self.path, clock)
        self._meta = CacheMeta(encoder, self._scopes, self.path)
        self._entries = _Entries(self, clock)
        self._file = CacheFile(self.path, self._connected)
        self._hits = 0
        self._misses = 0
        with self._lock:
            self._file.open()

    def lookup(
        self, prompt: str, scope: str, vector: npt.NDArray[Any] | None = None
    ) -> CacheHit | None:
        """The stored answer whose prompt is most similar to ``prompt`` in ``scope``, if it
        reaches ``similarity`` and is younger than ``ttl_s``. ``vector``: ``embed(prompt)``
        when the caller already has it."""
        query = _unit(self._embed(prompt) if vector is None else vector)
        hit = self._locked(lambda conn: self._entries.find(conn, query, scope))
        with self._lock:
            if hit is None:
                self._misses += 1
            else:
                self._hits += 1
        return hit

    def put(
        self,
        prompt: str,
        scope: str,
        answer: dict[str, Any],
        *,
        private: bool = False,
        vector: npt.NDArray[Any] | None = None,
    ) -> bool:
        """Store ``answer`` for ``prompt`` in ``scope`` (replacing the same prompt's entry).
        False when not stored: a private prompt is neither embedded nor written."""
        if private:
            return False
        text = json.dumps(answer, ensure_ascii=False, separators=(",", ":"))
        unit = _unit(self._embed(prompt) if vector is None else vector)
        self._locked(lambda conn: self._entries.put(conn, prompt, scope, unit, text))
        return True

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        return self._locked(self._entries.clear)

    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk, this process's hits and misses, and the settings."""
        entries, hits, misses = self._locked(
            lambda conn: (scalar(conn, "SELECT COUNT(*) FROM entries"), self._hits, self._misses)
        )
        return {
            "path": str(self.path),
            "encoder": self.encoder,
            "entries": entries,
            "bytes": self._file.bytes_on_disk(),
            "hits": hits,
            "misses": misses,
            "similarity": self.similarity,
            "ttl_s": self.ttl_s,
            "max_entries": self.max_entries,
        }

    def close(self) -> None:
        with self._lock:
            self._file.close()
            self._scopes.clear()

    def _connected(self, conn: sqlite3.Connection) -> None:
        self._meta.forget()
        self._scopes.clear()
        self._meta.sync(conn)

    def _locked(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run one operation under the lock. The one place SQLite errors are translated: a
        corrupt file is moved aside and the operation retried once on an empty cache."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._file.conn
                if conn is None:
                    raise StoreError(f"the semantic cache {self.path} is closed")
                try:
                    self._meta.sync(conn)
                    result = op(conn)
                except sqlite3.Error as exc:
                    self._scopes.clear()  # reload whatever a failed write left half-done
                    self._meta.forget()
                    if attempt == 2 or not is_corrupt(exc):
                        raise StoreError(f"semantic cache {self.path}: {exc}") from exc
                    self._scopes.clear()
                    self._file.recover(exc)
                    continue
                if self._meta.stale:
                    self._scopes.clear()
                    self._meta.stale = False
                return result
            raise AssertionError("unreachable")


class _Entries:
    """The cache's operations on its entries (under its lock, through ``_locked``)."""

    def __init__(self, cache: SemanticCache, clock: Callable[[], float]) -> None:
        self._cache, self._clock = cache, clock
        self._meta, self._scopes = cache._meta, cache._scopes

    def find(self, conn: sqlite3.Connection, query: Vector, scope: str) -> CacheHit | None:
        cache = self._cache
        self._meta.check_dim(query.size)
        index = self._scopes.get(conn, scope, self._meta.dim, cache.ttl_s)
        if index is None:
            return None
        now = self._clock()
        expired, best_id, score = index.search(query, fresh_after=now - cache.ttl_s)
        hit: CacheHit | None = None
        gone: list[int] = list(expired)
        good = best_id is not None and score >= cache.similarity - _ROUNDING
        if expired or good:
            with transaction(conn):
                conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in expired])
                if best_id is not None and good:
                    hit = self._take(conn, best_id, score, now)
                    if hit is None:
                        gone.append(best_id)
        for entry_id in gone:
            index.remove(entry_id)
        self._scopes.drop_if_empty(scope)
        return hit

    def _take(
        self, conn: sqlite3.Connection, entry_id: int, score: float, now: float
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
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            log.warning(
                "semantic cache %s: dropped an entry with an unreadable answer", self._cache.path
            )
            conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            self._meta.bump(conn)
            return None
        conn.execute("UPDATE entries SET used = ?, hits = hits + 1 WHERE id = ?", (now, entry_id))
        return CacheHit(
            prompt=prompt,
            similarity=min(1.0, score),
            age_s=max(0.0, now - created),
            answer=answer,
        )

    def put(
        self, conn: sqlite3.Connection, prompt: str, scope: str, vector: Vector, text: str
    ) -> None:
        self._meta.check_dim(vector.size)
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
            "SELECT id, scope FROM entries WHERE created <= ?", (now - self._cache.ttl_s,)
        ).fetchall()
        conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i, _ in expired])
        return expired

    def _evict(self, conn: sqlite3.Connection, keep: int) -> list[tuple[int, str]]:
        """Delete the least recently used entries beyond ``max_entries`` (never ``keep``)."""
        over = scalar(conn, "SELECT COUNT(*) FROM entries") - self._cache.max_entries
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


def _check_limits(similarity: float, ttl_s: float, max_entries: int) -> None:
    if not 0 < similarity <= 1:
        raise ValueError(f"cache similarity must be in (0, 1], got {similarity}")
    if not ttl_s > 0:
        raise ValueError(f"cache ttl_s must be > 0 seconds, got {ttl_s}")
    if max_entries < 1:
        raise ValueError(f"cache max_entries must be >= 1, got {max_entries}")


def _unit(vector: npt.NDArray[Any]) -> Vector:
    """The vector as contiguous float32 of length 1, so a dot product is the cosine."""
    v = np.asarray(vector, dtype=np.float32)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"a cache vector must be 1-D and non-empty, got shape {v.shape}")
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0:
        raise ValueError(f"a cache vector must be finite and non-zero, got norm {norm}")
    return np.ascontiguousarray(v / np.float32(norm), dtype=np.float32)

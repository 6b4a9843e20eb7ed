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
  opened for reading and writing, whose metadata is not what this cache writes, or that is
  a symbolic link) is moved aside to ``<name>.corrupt-<UTC time>`` and the cache starts
  empty; an entry with an unreadable column is dropped. Any other storage failure is raised as
  :class:`~ridgeline_core.errors.StoreError`, which a caller treats as "no cache this time".
* Answers can be sensitive: a directory the cache creates is 0700, the file is 0600, and a
  ``private`` prompt is neither embedded nor written.
* An answer ages from when it was stored (``ttl_s``); the size bound evicts the entries used
  least recently.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ridgeline_core.closing import Closing

from .cache_entries import CacheHit, CacheLimits, EntryLookup, EntryWriter
from .cache_guard import CacheGuard
from .cache_meta import CacheMeta
from .cache_scopes import ScopeIndex, Scopes
from .cache_sql import scalar

__all__ = ["CacheHit", "SemanticCache"]


Vector = npt.NDArray[np.float32]
Embed = Callable[[str], npt.NDArray[Any]]

_ScopeIndex = ScopeIndex  # the name tests know it by


class _CacheUpkeep:
    """Storing, clearing and counting: the cache's operations besides the lookup."""

    path: Path
    encoder: str
    similarity: float
    ttl_s: float
    max_entries: int
    _embed: Embed
    _guard: CacheGuard
    _lookup: EntryLookup
    _writer: EntryWriter

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
        self._guard.run(lambda conn: self._writer.put(conn, prompt, scope, unit, text))
        return True

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        return self._guard.run(self._writer.clear)

    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk, this process's hits and misses, and the settings."""
        entries, hits, misses = self._guard.run(
            lambda conn: (scalar(conn, "SELECT COUNT(*) FROM entries"), *self._lookup.counts)
        )
        return {
            "path": str(self.path),
            "encoder": self.encoder,
            "entries": entries,
            "bytes": self._guard.file.bytes_on_disk(),
            "hits": hits,
            "misses": misses,
            "similarity": self.similarity,
            "ttl_s": self.ttl_s,
            "max_entries": self.max_entries,
        }


class SemanticCache(_CacheUpkeep, Closing):
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
        self.path = Path(path)
        limits = CacheLimits(self.path, float(similarity), float(ttl_s), int(max_entries))
        self.encoder = encoder
        self.similarity = float(similarity)
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self._embed = embed
        self._scopes = Scopes(self.path, clock)
        self._meta = CacheMeta(encoder, self._scopes, self.path)
        self._lookup = EntryLookup(limits, self._meta, self._scopes, clock)
        self._writer = EntryWriter(limits, self._meta, self._scopes, clock)
        self._guard = CacheGuard(self.path, self._meta, self._scopes)

    def lookup(
        self, prompt: str, scope: str, vector: npt.NDArray[Any] | None = None
    ) -> CacheHit | None:
        """The stored answer whose prompt is most similar to ``prompt`` in ``scope``, if it
        reaches ``similarity`` and is younger than ``ttl_s``. ``vector``: ``embed(prompt)``
        when the caller already has it."""
        query = _unit(self._embed(prompt) if vector is None else vector)
        return self._guard.run(lambda conn: self._lookup.find(conn, query, scope))

    def close(self) -> None:
        self._guard.close()


def _unit(vector: npt.NDArray[Any]) -> Vector:
    """The vector as contiguous float32 of length 1, so a dot product is the cosine."""
    v = np.asarray(vector, dtype=np.float32)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"a cache vector must be 1-D and non-empty, got shape {v.shape}")
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0:
        raise ValueError(f"a cache vector must be finite and non-zero, got norm {norm}")
    return np.ascontiguousarray(v / np.float32(norm), dtype=np.float32)

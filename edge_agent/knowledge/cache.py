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

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import StoreError
from ridgeline_core.files import open_private, private_dir

from .vectors import VectorIndex

__all__ = ["CacheHit", "SemanticCache"]

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
Embed = Callable[[str], npt.NDArray[Any]]
_T = TypeVar("_T")

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 2.0  # another process's write is short; an answer should not wait longer
# An identical prompt scores 0.99999994 in float32, so similarity=1.0 would never hit.
_ROUNDING = 1e-6
# SQLite primary result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        prompt TEXT NOT NULL,
        vector BLOB NOT NULL,
        answer TEXT NOT NULL,
        created REAL NOT NULL,
        used REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0,
        UNIQUE (scope, prompt)
    )""",
    "CREATE INDEX entries_used ON entries (used, id)",
    "CREATE INDEX entries_created ON entries (created)",
)


@dataclass(frozen=True)
class CacheHit:
    prompt: str  # the cached prompt that matched
    similarity: float  # cosine similarity to the new prompt
    age_s: float  # since the answer was stored
    answer: dict[str, Any]  # what put() stored


class SemanticCache:
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
        if not 0 < similarity <= 1:
            raise ValueError(f"cache similarity must be in (0, 1], got {similarity}")
        if not ttl_s > 0:
            raise ValueError(f"cache ttl_s must be > 0 seconds, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"cache max_entries must be >= 1, got {max_entries}")
        self.path = Path(path)
        self.encoder = encoder
        self.similarity = float(similarity)
        self.ttl_s = float(ttl_s)
        self.max_entries = int(max_entries)
        self._embed = embed
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._data_version: int | None = None  # None: re-read meta before the next use
        self._generation: int | None = None  # of the content the loaded matrices hold
        self._stale = False  # a write found the generation moved under it: reload after it
        self._dim: int | None = None  # of the stored vectors; None while there are none
        self._scopes: dict[str, _ScopeIndex] = {}  # loaded, non-empty scopes only
        self._hits = 0
        self._misses = 0
        with self._lock:
            self._open()

    # -- public API ------------------------------------------------------------------------

    def lookup(
        self, prompt: str, scope: str, vector: npt.NDArray[Any] | None = None
    ) -> CacheHit | None:
        """The stored answer whose prompt is most similar to ``prompt`` in ``scope``, if it
        reaches ``similarity`` and is younger than ``ttl_s``. ``vector``: ``embed(prompt)``
        when the caller already has it."""
        query = _unit(self._embed(prompt) if vector is None else vector)
        return self._locked(lambda conn: self._lookup(conn, query, scope))

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
        self._locked(lambda conn: self._put(conn, prompt, scope, unit, text))
        return True

    def clear(self) -> int:
        """Remove every entry; returns how many there were."""
        return self._locked(self._clear)

    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk, this process's hits and misses, and the settings."""
        entries, hits, misses = self._locked(
            lambda conn: (_scalar(conn, "SELECT COUNT(*) FROM entries"), self._hits, self._misses)
        )
        return {
            "path": str(self.path),
            "encoder": self.encoder,
            "entries": entries,
            "bytes": self._bytes_on_disk(),
            "hits": hits,
            "misses": misses,
            "similarity": self.similarity,
            "ttl_s": self.ttl_s,
            "max_entries": self.max_entries,
        }

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- operations (called under the lock, through _locked) -------------------------------

    def _lookup(self, conn: sqlite3.Connection, query: Vector, scope: str) -> CacheHit | None:
        hit = self._find(conn, query, scope)
        if hit is None:
            self._misses += 1
        else:
            self._hits += 1
        return hit

    def _find(self, conn: sqlite3.Connection, query: Vector, scope: str) -> CacheHit | None:
        self._check_dim(query.size)
        index = self._index(conn, scope)
        if index is None:
            return None
        now = self._clock()
        expired, best_id, score = index.search(query, fresh_after=now - self.ttl_s)
        hit: CacheHit | None = None
        gone: list[int] = list(expired)
        if expired or score >= self.similarity - _ROUNDING:
            with _transaction(conn):
                conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in expired])
                if best_id is not None and score >= self.similarity - _ROUNDING:
                    hit = self._take(conn, best_id, score, now)
                    if hit is None:
                        gone.append(best_id)
        for entry_id in gone:
            index.remove(entry_id)
        if index.size == 0:
            self._scopes.pop(scope, None)
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
            log.warning("semantic cache %s: dropped an entry with an unreadable answer", self.path)
            conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            self._bump(conn)
            return None
        conn.execute("UPDATE entries SET used = ?, hits = hits + 1 WHERE id = ?", (now, entry_id))
        return CacheHit(
            prompt=prompt,
            similarity=min(1.0, score),
            age_s=max(0.0, now - created),
            answer=answer,
        )

    def _put(
        self, conn: sqlite3.Connection, prompt: str, scope: str, vector: Vector, text: str
    ) -> None:
        self._check_dim(vector.size)
        now = self._clock()
        with _transaction(conn):
            if self._dim is None:
                self._claim_dim(conn, vector.size)
            expired = self._sweep(conn, now)
            self._bump(conn)
            entry_id = _upsert(conn, scope, prompt, vector.tobytes(), text, now)
            evicted = self._evict(conn, keep=entry_id)
        for gone_id, gone_scope in [*expired, *evicted]:
            self._forget(gone_scope, gone_id)
        index = self._scopes.get(scope)
        if index is not None:
            index.add(entry_id, vector, now)

    def _sweep(self, conn: sqlite3.Connection, now: float) -> list[tuple[int, str]]:
        """Delete every expired entry (cheap: the index on ``created``). No bump: no process
        matches an expired entry anyway."""
        expired: list[tuple[int, str]] = conn.execute(
            "SELECT id, scope FROM entries WHERE created <= ?", (now - self.ttl_s,)
        ).fetchall()
        conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i, _ in expired])
        return expired

    def _evict(self, conn: sqlite3.Connection, keep: int) -> list[tuple[int, str]]:
        """Delete the least recently used entries beyond ``max_entries`` (never ``keep``)."""
        over = _scalar(conn, "SELECT COUNT(*) FROM entries") - self.max_entries
        if over <= 0:
            return []
        evicted: list[tuple[int, str]] = conn.execute(
            "SELECT id, scope FROM entries WHERE id != ? ORDER BY used, id LIMIT ?", (keep, over)
        ).fetchall()
        conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i, _ in evicted])
        return evicted

    def _clear(self, conn: sqlite3.Connection) -> int:
        with _transaction(conn):
            removed = conn.execute("DELETE FROM entries").rowcount
            conn.execute("DELETE FROM meta WHERE key = 'dim'")
            self._bump(conn)
        self._scopes.clear()
        self._dim = None
        return max(0, removed)

    # -- in-memory indexes -----------------------------------------------------------------

    def _index(self, conn: sqlite3.Connection, scope: str) -> _ScopeIndex | None:
        """The scope's matrix, loaded on first use; None when the scope has no live entries
        (empty scopes are not kept: conversations make many of them)."""
        index = self._scopes.get(scope)
        if index is not None or self._dim is None:
            return index
        rows = conn.execute(
            "SELECT id, vector, created FROM entries WHERE scope = ? AND created > ?",
            (scope, self._clock() - self.ttl_s),
        ).fetchall()
        width = self._dim * 4
        bad = [(entry_id,) for entry_id, blob, _ in rows if len(blob) != width]
        if bad:
            log.warning("semantic cache %s: dropped %d malformed entries", self.path, len(bad))
            with _transaction(conn):
                conn.executemany("DELETE FROM entries WHERE id = ?", bad)
            rows = [r for r in rows if len(r[1]) == width]
        if not rows:
            return None
        index = _ScopeIndex.from_rows(self._dim, rows)
        self._scopes[scope] = index
        return index

    def _forget(self, scope: str, entry_id: int) -> None:
        index = self._scopes.get(scope)
        if index is not None:
            index.remove(entry_id)
            if index.size == 0:
                del self._scopes[scope]

    def _check_dim(self, size: int) -> None:
        if self._dim is not None and size != self._dim:
            raise ValueError(
                f"the vector has {size} dimensions but the cached vectors have "
                f"{self._dim} (encoder {self.encoder!r})"
            )

    # -- the file: open, sync, recover -----------------------------------------------------

    def _locked(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run one operation under the lock. The one place SQLite errors are translated: a
        corrupt file is moved aside and the operation retried once on an empty cache."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._conn
                if conn is None:
                    raise StoreError(f"the semantic cache {self.path} is closed")
                try:
                    self._sync(conn)
                    result = op(conn)
                except sqlite3.Error as exc:
                    self._scopes.clear()  # reload whatever a failed write left half-done
                    self._data_version = self._generation = None
                    if attempt == 2 or not _is_corrupt(exc):
                        raise StoreError(f"semantic cache {self.path}: {exc}") from exc
                    self._recover(exc)
                    continue
                if self._stale:
                    self._scopes.clear()
                    self._stale = False
                return result
            raise AssertionError("unreachable")

    def _open(self) -> None:
        """Open the file, or move an unusable one aside and start empty."""
        try:
            private_dir(self.path.parent)
        except OSError as exc:
            raise StoreError(f"cannot create the semantic cache's directory: {exc}") from exc
        try:
            self._connect()
        except (sqlite3.Error, PermissionError) as exc:
            if not self.path.exists() or (
                isinstance(exc, sqlite3.Error) and not _is_corrupt(exc)
            ):  # not the file's fault: moving it aside would not help
                raise StoreError(f"cannot open the semantic cache {self.path}: {exc}") from exc
            self._move_aside(exc)
            try:
                self._connect()
            except (sqlite3.Error, OSError) as again:
                raise StoreError(f"cannot open the semantic cache {self.path}: {again}") from again
        except OSError as exc:
            raise StoreError(f"cannot open the semantic cache {self.path}: {exc}") from exc

    def _connect(self) -> None:
        fd = open_private(self.path, os.O_RDWR)  # narrows a file an older version made wider
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # a cache may lose its last writes
            self._create_schema(conn)
            self._conn, self._identity = conn, (st.st_dev, st.st_ino)
            self._data_version = self._generation = None
            self._scopes.clear()
            self._sync(conn)  # drops another encoder's entries now, not at first use
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            version = _scalar(conn, "PRAGMA user_version")
            if version == SCHEMA_VERSION:
                return
            if version:
                log.info(
                    "semantic cache %s has schema %d, this version uses %d: starting empty",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                )
            conn.execute("DROP TABLE IF EXISTS entries")
            conn.execute("DROP TABLE IF EXISTS meta")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _sync(self, conn: sqlite3.Connection) -> None:
        """Before each use: if another connection committed, re-read the metadata (it may
        even have claimed the file for another encoder) and, if the content changed, forget
        the loaded matrices."""
        version = _scalar(conn, "PRAGMA data_version")
        if version == self._data_version:
            return
        self._data_version = version
        self._claim_encoder(conn)
        generation = int(_meta(conn, "generation") or 0)
        if generation != self._generation:
            self._scopes.clear()
            self._generation = generation
            dim = _meta(conn, "dim")
            self._dim = int(dim) if dim is not None else None

    def _bump(self, conn: sqlite3.Connection) -> None:
        """Record a change of what can match (inside the writer's transaction)."""
        before = int(_meta(conn, "generation") or 0)
        if before != self._generation:
            self._stale = True  # another process changed it since this one last looked
        self._generation = before + 1
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('generation', ?)", (str(before + 1),)
        )

    def _claim_encoder(self, conn: sqlite3.Connection) -> None:
        if _meta(conn, "encoder") == self.encoder:
            return
        with _transaction(conn):
            found = _meta(conn, "encoder")  # again, under the write lock
            if found == self.encoder:
                return
            dropped = conn.execute("DELETE FROM entries").rowcount
            if found is not None:
                log.info(
                    "semantic cache %s was written with encoder %r, not %r: dropped its %d "
                    "entries (their vectors are not comparable)",
                    self.path,
                    found,
                    self.encoder,
                    dropped,
                )
            conn.execute("DELETE FROM meta WHERE key = 'dim'")
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('encoder', ?)", (self.encoder,)
            )
            self._bump(conn)
        self._scopes.clear()
        self._dim = None

    def _claim_dim(self, conn: sqlite3.Connection, dim: int) -> None:
        """The first vector stored fixes the dimension (inside the writer's transaction)."""
        found = _meta(conn, "dim")
        if found is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('dim', ?)", (str(dim),))
            self._dim = dim
        else:
            self._dim = int(found)
            self._check_dim(dim)

    def _recover(self, exc: sqlite3.Error) -> None:
        """The open file went bad: move it aside (unless another process already did) and
        open a fresh one."""
        identity = self._identity
        self._close()
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == identity
        except FileNotFoundError:
            same = False
        if same:
            self._move_aside(exc)
        try:
            self._connect()
        except (sqlite3.Error, OSError) as again:
            raise StoreError(f"cannot reopen the semantic cache {self.path}: {again}") from again

    def _move_aside(self, exc: BaseException) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        try:
            os.replace(self.path, aside)
            # A stale write-ahead log would be replayed into the fresh file: it goes too.
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))
        except OSError as move_error:
            raise StoreError(
                f"the semantic cache {self.path} is unreadable ({exc}) and could not be moved "
                f"aside: {move_error}"
            ) from exc
        log.warning(
            "semantic cache %s is unreadable (%s): moved it to %s and started empty",
            self.path,
            exc,
            aside.name,
        )

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._scopes.clear()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _bytes_on_disk(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(self.path.with_name(self.path.name + suffix)).st_size
        return total


class _ScopeIndex:
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
    def from_rows(cls, dim: int, rows: list[tuple[int, bytes, float]]) -> _ScopeIndex:
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


def _unit(vector: npt.NDArray[Any]) -> Vector:
    """The vector as contiguous float32 of length 1, so a dot product is the cosine."""
    v = np.asarray(vector, dtype=np.float32)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"a cache vector must be 1-D and non-empty, got shape {v.shape}")
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0:
        raise ValueError(f"a cache vector must be finite and non-zero, got norm {norm}")
    return np.ascontiguousarray(v / np.float32(norm), dtype=np.float32)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return type(exc) is sqlite3.DatabaseError  # what 3.10 raises for both


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: the write lock is taken at the start, so no other writer can
    slip in between this transaction's reads and its writes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _upsert(
    conn: sqlite3.Connection, scope: str, prompt: str, blob: bytes, text: str, now: float
) -> int:
    """Write the entry, replacing the same prompt's in the scope (keeping its id); its id."""
    row = conn.execute(
        "SELECT id FROM entries WHERE scope = ? AND prompt = ?", (scope, prompt)
    ).fetchone()
    if row is not None:
        conn.execute(
            "UPDATE entries SET vector = ?, answer = ?, created = ?, used = ?, hits = 0"
            " WHERE id = ?",
            (blob, text, now, now, row[0]),
        )
        return int(row[0])
    cursor = conn.execute(
        "INSERT INTO entries (scope, prompt, vector, answer, created, used)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (scope, prompt, blob, text, now, now),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0])


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])

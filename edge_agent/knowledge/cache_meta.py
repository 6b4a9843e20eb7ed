"""What the answer cache knows about its file's content: which encoder's vectors it holds,
their dimension, and a generation counter that moves whenever what can match changes, so a
process sees when another one changed the file (SQLite's ``data_version`` says someone
committed; the generation says whether it was more than recording hits)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from .cache_scopes import Scopes
from .cache_sql import UnusableCacheError, meta, scalar, set_meta, transaction

__all__ = ["CacheMeta"]

log = logging.getLogger("edge_agent.knowledge.cache")

_MAX_DIM = 65_536  # wider than any sentence encoder's vectors
_MAX_GENERATION = 2**63 - 1


class CacheMeta:
    """The file's encoder, dimension and generation, as this process last saw them."""

    def __init__(self, encoder: str, scopes: Scopes, path: Path) -> None:
        self.encoder, self._path = encoder, path
        self._scopes = scopes  # forgotten whenever the content they mirror changed
        self.data_version: int | None = None  # None: re-read meta before the next use
        self.generation: int | None = None  # of the content the loaded matrices hold
        self.stale = False  # a write found the generation moved under it: reload after it
        self.dim: int | None = None  # of the stored vectors; None while there are none

    def forget(self) -> None:
        """Re-read the metadata before the next use (a new connection, or a failed one)."""
        self.data_version = self.generation = None

    def sync(self, conn: sqlite3.Connection) -> None:
        """Before each use: if another connection committed, re-read the metadata (it may
        even have claimed the file for another encoder) and, if the content changed, forget
        the loaded matrices."""
        version = scalar(conn, "PRAGMA data_version")
        if version == self.data_version:
            return
        self.data_version = version
        self._claim_encoder(conn)
        generation = meta_int(conn, "generation", 0, _MAX_GENERATION) or 0
        if generation != self.generation:
            self._scopes.clear()
            self.generation = generation
            self.dim = meta_int(conn, "dim", 1, _MAX_DIM)

    def bump(self, conn: sqlite3.Connection) -> None:
        """Record a change of what can match (inside the writer's transaction)."""
        before = meta_int(conn, "generation", 0, _MAX_GENERATION) or 0
        if before != self.generation:
            self.stale = True  # another process changed it since this one last looked
        self.generation = before + 1
        set_meta(conn, "generation", str(before + 1))

    def claim_dim(self, conn: sqlite3.Connection, dim: int) -> None:
        """The first vector stored fixes the dimension (inside the writer's transaction)."""
        self.dim = _stored_dim(conn, dim)
        self.check_dim(conn, dim)

    def check_dim(self, conn: sqlite3.Connection, size: int) -> None:
        """A vector of ``size`` values fits the stored ones: ValueError when it does not
        (the caller's mistake); UnusableCacheError when the recorded dimension is one no
        stored vector has (the file's); a record without vectors is forgotten."""
        if self.dim is None or size == self.dim:
            return
        if _count(conn, "SELECT COUNT(*) FROM (SELECT 1 FROM entries LIMIT 1)") == 0:
            self.dim = None  # the next store records its own
            return
        fitting = "SELECT COUNT(*) FROM (SELECT 1 FROM entries WHERE length(vector) = ? LIMIT 1)"
        if _count(conn, fitting, self.dim * 4) == 0:
            raise UnusableCacheError(f"its meta dim is {self.dim}, which no stored vector has")
        raise ValueError(
            f"the vector has {size} dimensions but the cached vectors have "
            f"{self.dim} (encoder {self.encoder!r})"
        )

    def _claim_encoder(self, conn: sqlite3.Connection) -> None:
        if meta(conn, "encoder") == self.encoder:
            return
        with transaction(conn):
            if not _take_over(conn, self.encoder, self._path):
                return
            self.bump(conn)
        self._scopes.clear()
        self.dim = None


def _stored_dim(conn: sqlite3.Connection, dim: int) -> int:
    """The stored vectors' dimension: the one recorded, or ``dim`` (now recorded) while
    there are no vectors."""
    found = meta_int(conn, "dim", 1, _MAX_DIM)
    if found is None or _count(conn, "SELECT COUNT(*) FROM (SELECT 1 FROM entries LIMIT 1)") == 0:
        set_meta(conn, "dim", str(dim))
        return dim
    return found


def _count(conn: sqlite3.Connection, sql: str, *args: object) -> int:
    return int(conn.execute(sql, args).fetchone()[0])


def meta_int(conn: sqlite3.Connection, key: str, low: int, high: int) -> int | None:
    """The meta value ``key`` as an integer in [``low``, ``high``]; None when unset.
    Anything else was not written by this cache: UnusableCacheError (moved aside)."""
    value = meta(conn, key)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise UnusableCacheError(f"its meta {key} is {value[:40]!r}, not an integer in range")
    return number


def _take_over(conn: sqlite3.Connection, encoder: str, path: Path) -> bool:
    """Claim the file for ``encoder`` (inside a write transaction): drop another encoder's
    entries and dimension. False when it already is this encoder's."""
    found = meta(conn, "encoder")  # again, under the write lock
    if found == encoder:
        return False
    dropped = conn.execute("DELETE FROM entries").rowcount
    if found is not None:
        log.info(
            "semantic cache %s was written with encoder %r, not %r: dropped its %d "
            "entries (their vectors are not comparable)",
            path,
            found,
            encoder,
            dropped,
        )
    conn.execute("DELETE FROM meta WHERE key = 'dim'")
    set_meta(conn, "encoder", encoder)
    return True

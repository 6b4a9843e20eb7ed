"""What the answer cache knows about its file's content: which encoder's vectors it holds,
their dimension, and a generation counter that moves whenever what can match changes, so a
process sees when another one changed the file (SQLite's ``data_version`` says someone
committed; the generation says whether it was more than recording hits)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from .cache_scopes import Scopes
from .cache_sql import meta, scalar, set_meta, transaction

__all__ = ["CacheMeta"]

log = logging.getLogger("edge_agent.knowledge.cache")


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
        generation = int(meta(conn, "generation") or 0)
        if generation != self.generation:
            self._scopes.clear()
            self.generation = generation
            dim = meta(conn, "dim")
            self.dim = int(dim) if dim is not None else None

    def bump(self, conn: sqlite3.Connection) -> None:
        """Record a change of what can match (inside the writer's transaction)."""
        before = int(meta(conn, "generation") or 0)
        if before != self.generation:
            self.stale = True  # another process changed it since this one last looked
        self.generation = before + 1
        set_meta(conn, "generation", str(before + 1))

    def claim_dim(self, conn: sqlite3.Connection, dim: int) -> None:
        """The first vector stored fixes the dimension (inside the writer's transaction)."""
        self.dim = _stored_dim(conn, dim)
        self.check_dim(dim)

    def check_dim(self, size: int) -> None:
        if self.dim is not None and size != self.dim:
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
    """The stored vectors' dimension: the one recorded, or ``dim`` (now recorded) if none."""
    found = meta(conn, "dim")
    if found is None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('dim', ?)", (str(dim),))
        return dim
    return int(found)


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

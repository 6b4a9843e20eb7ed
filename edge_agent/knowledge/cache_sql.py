"""The answer cache's SQLite file format and the small SQL helpers its parts share."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = [
    "BUSY_TIMEOUT_S",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UnusableCacheError",
    "is_corrupt",
    "meta",
    "scalar",
    "set_meta",
    "transaction",
    "upsert",
]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 2.0  # another process's write is short; an answer should not wait longer
# SQLite primary result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

SCHEMA = (
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


class UnusableCacheError(sqlite3.DatabaseError):
    """The file breaks what the cache requires of it (a meta value that is not what this
    cache writes, a symbolic link): as unusable as a file SQLite reports corrupt, and
    handled the same way (moved aside, the cache starts empty)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.sqlite_errorcode = _SQLITE_CORRUPT


def is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return type(exc) is sqlite3.DatabaseError  # what 3.10 raises for both


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
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


def upsert(
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


def scalar(conn: sqlite3.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0])


def meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

"""The semantic cache's one SQLite connection, behind one lock: each operation runs after
the cache's content is checked against the file (another process may have written it),
and this is the one place SQLite errors are translated: a corrupt file is moved aside and
the operation retried once on an empty cache; any other failure is a StoreError."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ridgeline_core.errors import StoreError

from .cache_file import CacheFile
from .cache_meta import CacheMeta
from .cache_scopes import Scopes
from .cache_sql import is_corrupt

__all__ = ["CacheGuard"]

_T = TypeVar("_T")


class CacheGuard:
    """Runs operations on the cache file under the lock (see the module docstring)."""

    def __init__(self, path: Path, meta: CacheMeta, scopes: Scopes) -> None:
        self.path = path
        self.lock = threading.Lock()
        self._meta, self._scopes = meta, scopes
        self.file = CacheFile(path, self._connected)
        with self.lock:
            self.file.open()

    def _connected(self, conn: sqlite3.Connection) -> None:
        self._meta.forget()
        self._scopes.clear()
        self._meta.sync(conn)

    def close(self) -> None:
        with self.lock:
            self.file.close()
            self._scopes.clear()

    def run(self, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run one operation under the lock. The one place SQLite errors are translated: a
        corrupt file is moved aside and the operation retried once on an empty cache."""
        with self.lock:
            for attempt in (1, 2):
                conn = self.file.conn
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
                    self.file.recover(exc)
                    continue
                if self._meta.stale:
                    self._scopes.clear()
                    self._meta.stale = False
                return result
            raise AssertionError("unreachable")

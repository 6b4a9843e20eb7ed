"""The answer cache's SQLite file: opened private (0600 in a 0700 directory), in WAL mode;
a file that is corrupt or not a database, whose metadata is not what this cache writes, or
that is a symbolic link (it, or its write-ahead log) is moved aside to
``<name>.corrupt-<UTC time>`` (with its write-ahead log; a link is moved as the link, what
it points to is never opened or changed) and the cache starts empty; any other failure is a
StoreError."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ridgeline_core import files
from ridgeline_core.errors import StoreError
from ridgeline_core.files import open_private, private_dir

from .cache_sql import (
    BUSY_TIMEOUT_S,
    SCHEMA,
    SCHEMA_VERSION,
    UnusableCacheError,
    is_corrupt,
    scalar,
    transaction,
)

__all__ = ["CacheFile"]

log = logging.getLogger("edge_agent.knowledge.cache")

_SIDE_FILES = ("-wal", "-shm")  # SQLite's write-ahead log and its index


class CacheFile:
    """The open connection to the cache file, reopened fresh when the file goes bad."""

    def __init__(self, path: Path, on_connect: Callable[[sqlite3.Connection], None]) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._on_connect = on_connect  # a new connection: what was known of the old is gone

    def open(self) -> None:
        """Open the file, or move an unusable one aside and start empty."""
        _private_parent(self.path)
        try:
            self._connect()
        except (sqlite3.Error, PermissionError) as exc:
            if not os.path.lexists(self.path) or (
                isinstance(exc, sqlite3.Error) and not is_corrupt(exc)
            ):  # not the file's fault: moving it aside would not help
                raise StoreError(f"cannot open the semantic cache {self.path}: {exc}") from exc
            move_aside(self.path, exc)
            try:
                self._connect()
            except (sqlite3.Error, OSError) as again:
                raise StoreError(f"cannot open the semantic cache {self.path}: {again}") from again
        except OSError as exc:
            raise StoreError(f"cannot open the semantic cache {self.path}: {exc}") from exc

    def recover(self, exc: sqlite3.Error) -> None:
        """The open file went bad: move it aside (unless another process already did) and
        open a fresh one."""
        identity = self._identity
        self.close()
        if _is_file(self.path, identity):
            move_aside(self.path, exc)
        try:
            self._connect()
        except (sqlite3.Error, OSError) as again:
            raise StoreError(f"cannot reopen the semantic cache {self.path}: {again}") from again

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def bytes_on_disk(self) -> int:
        return bytes_on_disk(self.path)

    def _connect(self) -> None:
        conn, identity = connect(self.path)
        try:
            self.conn, self._identity = conn, identity
            self._on_connect(conn)  # drops another encoder's entries now, not at first use
        except BaseException:
            self.conn = None
            conn.close()
            raise


def bytes_on_disk(path: Path) -> int:
    """The size of the cache file and its write-ahead log."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(path.with_name(path.name + suffix)).st_size
    return total


def _private_parent(path: Path) -> None:
    """Create the cache file's directory, private (0700): past prompts can be sensitive."""
    try:
        private_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"cannot create the semantic cache's directory: {exc}") from exc


def _is_file(path: Path, identity: tuple[int, int] | None) -> bool:
    """Whether ``path`` is still the file of ``identity`` (st_dev, st_ino): not yet moved
    aside or replaced by another process."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == identity


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Tables of this version's schema; a file of another version starts empty."""
    with transaction(conn):
        version = scalar(conn, "PRAGMA user_version")
        if version == SCHEMA_VERSION:
            return
        if version:
            log.info(
                "semantic cache %s has schema %d, this version uses %d: starting empty",
                path,
                version,
                SCHEMA_VERSION,
            )
        conn.execute("DROP TABLE IF EXISTS entries")
        conn.execute("DROP TABLE IF EXISTS meta")
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def move_aside(path: Path, exc: BaseException) -> None:
    """Move an unusable file (and its WAL) to ``<name>.corrupt-<UTC time>``."""
    try:
        aside = files.move_aside(path, _SIDE_FILES)
    except OSError as move_error:
        raise StoreError(
            f"the semantic cache {path} is unreadable ({exc}) and could not be moved "
            f"aside: {move_error}"
        ) from exc
    log.warning(
        "semantic cache %s is unreadable (%s): moved it to %s and started empty",
        path,
        exc,
        aside.name,
    )


def _refuse_links(path: Path) -> None:
    """SQLite would follow a symbolic link (to the file or its WAL) and write, or this
    module chmod, whatever it points to: such a file is not used."""
    for suffix in ("", *_SIDE_FILES):
        if os.path.islink(path.with_name(path.name + suffix)):
            raise UnusableCacheError(f"{path.name}{suffix} is a symbolic link")


def connect(path: Path) -> tuple[sqlite3.Connection, tuple[int, int]]:
    """A connection to ``path`` (made 0600, WAL mode, this version's schema) and the
    file's identity (st_dev, st_ino), to tell later whether it was replaced."""
    _refuse_links(path)
    try:
        fd = open_private(path, os.O_RDWR)  # narrows a file an older version made wider
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link made since the check
            raise UnusableCacheError(f"{path.name} is a symbolic link") from exc
        raise
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a cache may lose its last writes
        create_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn, (st.st_dev, st.st_ino)

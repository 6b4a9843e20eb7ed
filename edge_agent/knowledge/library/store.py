"""One collection on disk: a SQLite file of its sources, chunks and their vectors.

``<knowledge dir>/<name>/chunks.sqlite``, the directory 0700 and the file 0600: the
chunks are the user's documents. Each source file is replaced in one transaction (its old
chunks out, its new ones in), so a crash or a failed embedding leaves the collection as
it was. A source's vectors are one float32 matrix in its row (a blob per chunk would
take a page each: twice the disk); they are loaded into memory for search
(:mod:`.search`). A chunk's key is its source's id and its place in the source.

``judged`` holds the collection's judged outcomes: the embedding of a question it answered
(never its text) and whether the answer was right, from feedback or the broker's verdict.
Expert selection reads them (:mod:`.profiles`). They live in the collection's own private
file because a question about the user's documents is itself private.

A file SQLite cannot read is a :class:`StoreError` naming the collection, and it is left
where it is: removing it is the user's call (``edge-agent knowledge rm``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import StoreError, UnknownCollectionError
from ridgeline_core.files import open_private, private_dir

from .chunking import Chunk

__all__ = ["FILE_NAME", "ChunkRow", "CollectionFile", "SourceRow"]

FILE_NAME = "chunks.sqlite"
FORMAT = "1"
_SCHEMA = """
create table if not exists meta(key text primary key, value text not null);
create table if not exists sources(
    id integer primary key, path text not null unique, sha256 text not null,
    bytes integer not null, chunks integer not null, added real not null,
    vectors blob not null);
create table if not exists chunks(
    source integer not null, ordinal integer not null, heading text not null,
    text text not null, primary key (source, ordinal)) without rowid;
create table if not exists judged(
    id integer primary key, vector blob not null, right integer not null,
    source text not null, at real not null);
"""
_ORDINAL_BITS = 24  # a key is source id << 24 | ordinal: up to 16M chunks a file


@dataclass(frozen=True)
class SourceRow:
    path: str
    sha256: str
    bytes: int
    chunks: int


@dataclass(frozen=True)
class ChunkRow:
    id: int
    source: str
    ordinal: int
    heading: str
    text: str


class _CollectionDb:
    """A collection's SQLite file opened (created when asked), its metadata, and the one
    place SQLite and OS errors become StoreError."""

    def __init__(self, name: str, directory: Path, *, create: bool = False) -> None:
        self.name = name
        self.path = directory / FILE_NAME
        if not self.path.exists() and not create:
            raise UnknownCollectionError(
                f"no knowledge collection named {name!r} (edge-agent knowledge list)",
                param="knowledge",
            )
        with self._errors("open"):
            private_dir(directory)
            os.close(open_private(self.path, os.O_RDWR))
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.executescript(_SCHEMA)
            stored = self.meta("format")
            if stored is None:
                self.set_meta(format=FORMAT)
            elif stored != FORMAT:
                raise StoreError(
                    f"knowledge collection {name!r}: {self.path} has format {stored}, "
                    f"this version reads {FORMAT}"
                )

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"knowledge collection {self.name!r}: cannot {doing} {self.path} ({exc}); "
                f"`edge-agent knowledge rm {self.name}` removes it, then add its files again"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"knowledge collection {self.name!r}: cannot {doing} {self.path} "
                f"({exc.strerror or exc})"
            ) from None

    def meta(self, key: str) -> str | None:
        with self._errors("read"):
            row = self._db.execute("select value from meta where key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, **values: str | None) -> None:
        with self._errors("write"), self._db:
            for key, value in values.items():
                if value is None:
                    self._db.execute("delete from meta where key = ?", (key,))
                else:
                    self._db.execute(
                        "insert or replace into meta(key, value) values (?, ?)", (key, value)
                    )

    def stamp(self) -> tuple[int, int]:
        """Changes when another process writes the file (mtime, size)."""
        info = self.path.stat()
        return info.st_mtime_ns, info.st_size

    def close(self) -> None:
        self._db.close()


class _ChunkReader(_CollectionDb):
    """The vectors, for search, and the chunks they stand for."""

    def vectors(self, dim: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Every chunk's key and vector."""
        with self._errors("read"):
            rows = self._db.execute(
                "select id, chunks, vectors from sources order by id"
            ).fetchall()
        keys = [(source << _ORDINAL_BITS) + np.arange(n, dtype=np.int64) for source, n, _ in rows]
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32)
        total = sum(n for _, n, _ in rows)
        if matrix.size != total * dim:
            raise StoreError(
                f"knowledge collection {self.name!r}: {self.path} holds vectors of another "
                f"size than {dim}; remove it (edge-agent knowledge rm {self.name}) and add "
                "its files again"
            )
        return np.concatenate(keys) if keys else np.zeros(0, np.int64), matrix.reshape(total, dim)

    def chunks(self, keys: Sequence[int]) -> dict[int, ChunkRow]:
        """The chunks with these keys (one primary-key lookup each: k is small)."""
        mask = (1 << _ORDINAL_BITS) - 1
        found: dict[int, ChunkRow] = {}
        for key in keys:
            rows = self._rows("c.source = ? and c.ordinal = ?", [key >> _ORDINAL_BITS, key & mask])
            found.update((r.id, r) for r in rows)
        return found

    def source_chunks(self, path: str) -> list[ChunkRow]:
        return self._rows("s.path = ?", [path])

    def _rows(self, where: str, args: list[object]) -> list[ChunkRow]:
        query = (
            f"select (c.source << {_ORDINAL_BITS}) | c.ordinal, s.path, c.ordinal, c.heading, "
            f"c.text from chunks c join sources s on s.id = c.source where {where}"
        )
        with self._errors("read"):
            return [ChunkRow(*r) for r in self._db.execute(query, args)]


class _JudgedRows(_ChunkReader):
    """The judged answers expert selection reads, and the counts of rows."""

    def count(self, table: str = "chunks") -> int:
        """Rows in ``chunks`` or ``judged``."""
        if table not in ("chunks", "judged"):
            raise ValueError(table)
        with self._errors("read"):
            return int(self._db.execute(f"select count(*) from {table}").fetchone()[0])

    def judge(self, vector: npt.NDArray[np.float32], right: bool, source: str) -> None:
        """Keep one judged answer: the question's embedding and whether it was right."""
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        with self._errors("write"), self._db:
            self._db.execute(
                "insert into judged(vector, right, source, at) values (?, ?, ?, ?)",
                (blob, int(right), source, time.time()),
            )

    def forget_judged(self) -> None:
        with self._errors("write"), self._db:
            self._db.execute("delete from judged")

    def judged(self, dim: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """The judged questions' embeddings (of ``dim``; others, from an encoder since
        replaced, are left out) and whether each was answered right."""
        with self._errors("read"):
            rows = self._db.execute("select vector, right from judged order by id").fetchall()
        kept = [(v, r) for v, r in rows if len(v) == dim * 4]
        matrix = np.frombuffer(b"".join(v for v, _ in kept), dtype=np.float32)
        return matrix.reshape(len(kept), dim), np.array([bool(r) for _, r in kept], dtype=bool)


class CollectionFile(_JudgedRows):
    """A collection's sources and chunks, with their vectors."""

    def sources(self) -> dict[str, SourceRow]:
        with self._errors("read"):
            rows = self._db.execute("select path, sha256, bytes, chunks from sources").fetchall()
        return {r[0]: SourceRow(*r) for r in rows}

    def replace_source(
        self,
        path: str,
        sha256: str,
        size: int,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """The source's chunks, all at once: the old ones go in the same transaction."""
        if len(chunks) != len(vectors) or len(chunks) >= 1 << _ORDINAL_BITS:
            raise ValueError(f"{len(chunks)} chunks and {len(vectors)} vectors")
        blob = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        with self._errors("write"), self._db:
            self._db.execute(
                "delete from chunks where source = (select id from sources where path = ?)", (path,)
            )
            self._db.execute("delete from sources where path = ?", (path,))
            source = self._db.execute(
                "insert into sources(path, sha256, bytes, chunks, added, vectors) "
                "values (?, ?, ?, ?, ?, ?)",
                (path, sha256, size, len(chunks), time.time(), blob),
            ).lastrowid
            self._db.executemany(
                "insert into chunks(source, ordinal, heading, text) values (?, ?, ?, ?)",
                [(source, i, c.heading, c.text) for i, c in enumerate(chunks)],
            )

    def drop_sources(self, paths: Sequence[str]) -> None:
        with self._errors("write"), self._db:
            for path in paths:
                self._db.execute(
                    "delete from chunks where source = (select id from sources where path = ?)",
                    (path,),
                )
                self._db.execute("delete from sources where path = ?", (path,))

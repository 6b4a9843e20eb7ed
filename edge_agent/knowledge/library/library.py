"""The collections on this device: add, list, search and remove them."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ridgeline_core.errors import InvalidRequestError, StoreError, UnknownCollectionError
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.store.manifest_fields import NAME_PATTERN

from ...settings import Escalate, KnowledgeSettings
from .expert_files import ExpertFiles
from .ingest import IngestReport, ingest_into
from .search import LoadedCollection, Shelf, escalate_setting
from .store import FILE_NAME, CollectionFile

if TYPE_CHECKING:
    from ..embeddings import Embedder

__all__ = ["AUTO", "CollectionInfo", "Library", "check_collection_name"]

AUTO = "auto"  # a request's knowledge: choose among all collections


def check_collection_name(name: str) -> str:
    """A collection name: like a model name (1-64 of a-z 0-9 . _ -), never a path, and
    not the reserved ``auto``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidRequestError(
            f"invalid collection name {name!r}: use 1-64 of a-z 0-9 . _ - "
            "(starting with a letter or digit, no '..')",
            param="knowledge",
        )
    if name == AUTO:
        raise InvalidRequestError(
            f"{AUTO!r} is reserved (it asks to choose among all collections)", param="knowledge"
        )
    return name


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    sources: int
    chunks: int
    bytes: int  # the store file on disk
    escalate: Escalate | None  # its own privacy setting (None: knowledge.escalate)
    description: str

    @classmethod
    def of(cls, file: CollectionFile) -> CollectionInfo:
        sources = file.sources()
        return cls(
            file.name, len(sources), sum(s.chunks for s in sources.values()),
            file.path.stat().st_size, escalate_setting(file.meta("escalate")),
            file.meta("description") or "",
        )  # fmt: skip


class Library:
    """The collections under ``root``, each loaded for search on first use."""

    def __init__(self, settings: KnowledgeSettings, root: Path, embedder: Embedder) -> None:
        self.settings = settings
        self.root = root
        self.embedder = embedder
        self._shelf = Shelf(self._open, lambda file: _dim(file, embedder))

    def names(self) -> list[str]:
        found = self.root.iterdir() if self.root.is_dir() else ()
        return sorted(p.name for p in found if (p / FILE_NAME).exists())

    def _open(self, name: str, create: bool = False) -> CollectionFile:
        return CollectionFile(check_collection_name(name), self.root / name, create=create)

    def info(self, name: str) -> CollectionInfo:
        with contextlib.closing(self._open(name)) as file:
            return CollectionInfo.of(file)

    def add(
        self,
        name: str,
        paths: Sequence[Path],
        *,
        escalate: Escalate | None = None,
        description: str | None = None,
        expert: ExpertFiles | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> IngestReport:
        """Ingest ``paths`` into ``name`` (created when new); only changed files are
        embedded. With no paths, an existing collection takes the new settings (and is
        embedded again if the encoder changed). ``expert`` names the local model and LoRA
        adapter its questions are answered with. A new collection that fails is removed."""
        exists = (self.root / check_collection_name(name) / FILE_NAME).exists()
        if not paths and not exists:
            raise InvalidRequestError(f"name the files to add to the new collection {name!r}")
        meta = _meta(escalate, description, expert)
        file = self._open(name, create=True)
        try:
            file.set_meta(**meta)
            report = ingest_into(file, paths, self.embedder, self.settings, progress)
        except BaseException:
            file.close()
            if not exists:
                shutil.rmtree(self.root / name, ignore_errors=True)
            raise
        file.close()
        self._shelf.forget(name)
        return report

    def remove(self, name: str) -> None:
        directory = self.root / check_collection_name(name)
        if not (directory / FILE_NAME).exists():
            raise UnknownCollectionError(f"no knowledge collection named {name!r}")
        self._shelf.forget(name)
        shutil.rmtree(directory)

    def load(self, name: str) -> LoadedCollection:
        """The collection ready for search (loaded again when another process wrote it)."""
        return self._shelf.get(name)

    def escalate(self, name: str) -> Escalate:
        """The collection's privacy setting: its own, else ``knowledge.escalate``."""
        return self.load(name).escalate or self.settings.escalate

    def close(self) -> None:
        self._shelf.close()


def _dim(file: CollectionFile, embedder: Embedder) -> int:
    """The encoder's dimension, once the collection is known to be embedded with it."""
    if file.meta("encoder") not in (None, embedder.model_sha256()):
        raise StoreError(
            f"knowledge collection {file.name!r} was embedded with another encoder; "
            f"`edge-agent knowledge add {file.name}` embeds it again"
        )
    return int(embedder.encoder.dim)


def _meta(
    escalate: str | None, description: str | None, expert: ExpertFiles | None
) -> dict[str, str]:
    """The collection settings given (the rest stay as they are)."""
    given = {"escalate": escalate, "description": description}
    meta = {key: value for key, value in given.items() if value is not None}
    return meta | (expert.meta() if expert is not None else {})

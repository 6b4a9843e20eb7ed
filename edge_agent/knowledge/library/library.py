"""The collections on this device: add, list, search and remove them."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

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
Question = str | npt.NDArray[np.float32]  # a question, or its embedding


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
    judged: int = 0  # judged answers its expert selection reads

    @classmethod
    def of(cls, file: CollectionFile) -> CollectionInfo:
        sources = file.sources()
        return cls(
            file.name, len(sources), sum(s.chunks for s in sources.values()),
            file.path.stat().st_size, escalate_setting(file.meta("escalate")),
            file.meta("description") or "", file.count("judged"),
        )  # fmt: skip


class Library:
    """The collections under ``root``, each loaded for search on first use."""

    def __init__(self, settings: KnowledgeSettings, root: Path, embedder: Embedder) -> None:
        self.settings = settings
        self.root = root
        self.embedder = embedder
        self._shelf = Shelf(self._open, lambda file: _dim(file, embedder), embedder.embed_one)

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
        """Ingest ``paths`` into ``name`` (created when new; removed if that fails); only
        changed files are embedded. With no paths, an existing collection takes the new
        settings. ``expert``: the local model and LoRA adapter its questions are answered with."""
        exists = _exists(self.root, name, paths)
        file = self._open(name, create=True)
        try:
            file.set_meta(**_meta(escalate, description, expert))
            return ingest_into(file, paths, self.embedder, self.settings, progress)
        except BaseException:
            if not exists:
                file.close()
                shutil.rmtree(self.root / name, ignore_errors=True)
            raise
        finally:
            file.close()
            self._shelf.forget(name)

    def remove(self, name: str) -> None:
        directory = self.root / check_collection_name(name)
        if not (directory / FILE_NAME).exists():
            raise UnknownCollectionError(f"no knowledge collection named {name!r}")
        self._shelf.forget(name)
        shutil.rmtree(directory)

    def load(self, name: str) -> LoadedCollection:
        """The collection ready for search (loaded again when another process wrote it)."""
        return self._shelf.get(name)

    def judge(self, names: Sequence[str], question: Question, right: bool, source: str) -> None:
        """Keep a judged answer in the collections that gave it (see :mod:`.profiles`)."""
        loaded = [self.load(name) for name in dict.fromkeys(names)]  # each must exist
        vector = self.embedder.embed_one(question) if isinstance(question, str) else question
        for each in loaded:
            each.judge(vector, right, source)

    def escalate(self, name: str) -> Escalate:  # its own privacy setting, else the global one
        return self.load(name).escalate or self.settings.escalate

    def close(self) -> None:
        self._shelf.close()


def _exists(root: Path, name: str, paths: Sequence[Path]) -> bool:
    """Whether collection ``name`` exists; a new one needs files."""
    exists = (root / check_collection_name(name) / FILE_NAME).exists()
    if not paths and not exists:
        raise InvalidRequestError(f"name the files to add to the new collection {name!r}")
    return exists


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

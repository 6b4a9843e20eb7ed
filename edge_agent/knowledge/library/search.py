"""A collection loaded for search: its vectors in memory, its texts in SQLite.

Brute force over a float32 matrix: one matrix-vector product is exact, needs no index to
build or tune, and at 10k chunks of 384 dimensions takes well under a millisecond here
(benchmarks/knowledge_store.py measures it against sqlite-vec and usearch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import numpy as np
import numpy.typing as npt

from ridgeline_core.runtime.types import LoraAdapter

from ...settings import Escalate
from .profiles import Profile
from .store import ChunkRow, CollectionFile

__all__ = ["Expert", "LoadedCollection", "Passage", "Shelf"]


@dataclass(frozen=True)
class Expert:
    """How a collection's questions are answered: a preferred local model, and a LoRA
    adapter (GGUF) applied to it, recorded with its sha256 when it was added."""

    model: str | None = None
    adapter: LoraAdapter | None = None

    @classmethod
    def of(cls, file: CollectionFile) -> Expert:
        path, digest = file.meta("adapter"), file.meta("adapter_sha256")
        scale = float(file.meta("adapter_scale") or 1.0)
        adapter = None if path is None else LoraAdapter(path, scale, digest)
        return cls(file.meta("model"), adapter)


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk, with where it came from."""

    collection: str
    source: str  # the file's absolute path when it was added
    chunk: int  # its place in the source, from 0
    heading: str
    text: str
    score: float  # cosine similarity to the question

    def citation(self, number: int) -> dict[str, object]:
        return {
            "n": number,
            "collection": self.collection,
            "source": self.source,
            "chunk": self.chunk,
            "heading": self.heading,
            "score": round(self.score, 4),
        }


class LoadedCollection:
    """One collection's vectors and profile, reloaded when its file changes."""

    def __init__(
        self, file: CollectionFile, dim: int, description: npt.NDArray[np.float32] | None = None
    ) -> None:
        self.file = file
        self.stamp = file.stamp()
        self._ids, self._matrix = file.vectors(dim)
        self.profile = Profile(self._matrix, description, *file.judged(dim))
        self._lock = threading.Lock()  # one SQLite connection: one reader at a time
        self.escalate: Escalate | None = None  # its own privacy setting
        self.expert = Expert()  # the model and adapter its questions are answered with

    def __len__(self) -> int:
        return len(self._ids)

    def nearest(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """The ``k`` most similar chunks' ids and similarities, best first."""
        if not len(self._ids):
            return []
        scores = self._matrix @ query
        top = np.argpartition(-scores, k - 1)[:k] if scores.size > k else np.arange(scores.size)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self._ids[i]), float(scores[i])) for i in top]

    def passages(self, hits: list[tuple[int, float]]) -> list[Passage]:
        with self._lock:
            rows: dict[int, ChunkRow] = self.file.chunks([i for i, _ in hits])
        return [
            Passage(self.file.name, r.source, r.ordinal, r.heading, r.text, score)
            for i, score in hits
            if (r := rows.get(i)) is not None
        ]

    def judge(self, question: npt.NDArray[np.float32], right: bool, source: str) -> None:
        """Keep a judged answer of this collection's, in the file and in the profile; the
        vectors are not loaded again for it (unless another process wrote the file)."""
        with self._lock:
            unchanged = self.file.stamp() == self.stamp
            self.file.judge(question, right, source)
            self.profile.add_judged(question, right)
            if unchanged:
                self.stamp = self.file.stamp()

    def close(self) -> None:
        self.file.close()


Describe = Callable[[str], "npt.NDArray[np.float32]"]


class Shelf:
    """The collections loaded for search, each loaded again when its file changed (another
    process added to it) and closed when it is forgotten."""

    def __init__(
        self,
        open_file: Callable[[str], CollectionFile],
        dim: Callable[[CollectionFile], int],
        describe: Describe | None = None,
    ) -> None:
        self._open = open_file
        self._dim = dim
        self._describe = describe  # a description's embedding, for the profile
        self._loaded: dict[str, LoadedCollection] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> LoadedCollection:
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None and loaded.stamp == loaded.file.stamp():
                return loaded
            file = self._open(name)
            try:
                about = file.meta("description")
                seen = self._describe(about) if about and self._describe else None
                fresh = LoadedCollection(file, self._dim(file), seen)
                fresh.escalate = escalate_setting(file.meta("escalate"))
                fresh.expert = Expert.of(file)
            except BaseException:
                file.close()
                raise
            self._loaded[name] = fresh
            if loaded is not None:
                loaded.close()
            return fresh

    def forget(self, name: str) -> None:
        with self._lock:
            loaded = self._loaded.pop(name, None)
        if loaded is not None:
            loaded.close()

    def close(self) -> None:
        with self._lock:
            loaded, self._loaded = list(self._loaded.values()), {}
        for each in loaded:
            each.close()


def escalate_setting(value: str | None) -> Escalate | None:
    """A stored privacy setting (None: none, or one this version does not know)."""
    return next((s for s in get_args(Escalate) if s == value), None)

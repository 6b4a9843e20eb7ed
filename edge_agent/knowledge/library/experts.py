"""Expert selection: which collections a question is about, and the passages it needs.

Each candidate collection is scored by its best chunk's similarity to the question; the
``experts`` best that reach ``min_similarity`` are chosen, and the ``passages`` most similar
chunks among theirs go into the prompt. A collection that cannot be read is skipped (and
named) when the request left the choice to us (``auto``), and is the request's error
when it was named.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import StoreError

from ...settings import Escalate
from .library import AUTO, Library
from .policy import strictest
from .search import Expert, Passage

__all__ = ["ExpertScore", "Retrieval", "retrieve"]


@dataclass(frozen=True)
class ExpertScore:
    name: str
    score: float  # its best chunk's similarity to the question
    chosen: bool
    escalate: Escalate  # its privacy setting
    model: str | None = None  # the local model it prefers
    adapter: str | None = None  # the LoRA adapter its answers use


@dataclass(frozen=True)
class Retrieval:
    experts: tuple[ExpertScore, ...]  # best first
    passages: tuple[Passage, ...]  # best first; [1] is the first
    skipped: tuple[str, ...]  # "NAME: why", collections that could not be searched
    ms: float
    _experts: dict[str, Expert] = field(default_factory=dict, repr=False, compare=False)

    def escalate(self) -> Escalate | None:
        """The privacy setting that holds: the most private of the collections whose
        passages are in the prompt (None: nothing was retrieved)."""
        used = {p.collection for p in self.passages}
        return strictest(e.escalate for e in self.experts if e.name in used)

    def policy_source(self) -> str:
        held = self.escalate()
        names = sorted({p.collection for p in self.passages})
        return ", ".join(n for n in names if self._setting(n) == held)

    def expert(self) -> Expert | None:
        """The model and adapter of the best chosen collection, when it names any."""
        best = next((e for e in self.experts if e.chosen), None)
        return None if best is None else self._experts.get(best.name)

    def _setting(self, name: str) -> Escalate | None:
        return next((e.escalate for e in self.experts if e.name == name), None)


def retrieve(
    library: Library,
    question: npt.NDArray[np.float32],
    names: Sequence[str],
    *,
    experts: int,
    passages: int,
    min_similarity: float,
) -> Retrieval:
    started = time.perf_counter()
    auto = AUTO in names
    candidates = library.names() if auto else list(dict.fromkeys(names))
    scored: list[tuple[str, float, list[tuple[int, float]]]] = []
    skipped: list[str] = []
    for name in candidates:
        try:
            loaded = library.load(name)
        except StoreError as exc:
            if not auto:
                raise
            skipped.append(f"{name}: {exc}")
            continue
        hits = [h for h in loaded.nearest(question, passages) if h[1] >= min_similarity]
        scored.append((name, hits[0][1] if hits else float("-inf"), hits))
    scored.sort(key=lambda s: -s[1])
    chosen = [s for s in scored if s[2]][:experts]
    pool = sorted(
        ((name, hit) for name, _, hits in chosen for hit in hits), key=lambda x: -x[1][1]
    )[:passages]
    found: list[Passage] = []
    for name, _, _ in chosen:
        mine = [hit for owner, hit in pool if owner == name]
        found.extend(library.load(name).passages(mine) if mine else [])
    picked = {name for name, _, _ in chosen}
    return Retrieval(
        _experts={name: library.load(name).expert for name in picked},
        experts=tuple(_score(library, name, score, name in picked) for name, score, _ in scored),
        passages=tuple(sorted(found, key=lambda p: -p.score)),
        skipped=tuple(skipped),
        ms=(time.perf_counter() - started) * 1000,
    )


def _score(library: Library, name: str, score: float, chosen: bool) -> ExpertScore:
    expert = library.load(name).expert
    adapter = None if expert.adapter is None else expert.adapter.path
    return ExpertScore(name, score, chosen, library.escalate(name), expert.model, adapter)

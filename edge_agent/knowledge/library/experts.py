"""Expert selection: which collections a question is about, and the passages it needs.

Each candidate collection is scored by its best chunk's similarity to the question, plus
``profile_weight`` times the question's similarity to the collection's profile, plus
``judged_weight`` times how far its judged answers to similar questions lean right or wrong
(rate - 0.5; see :mod:`.profiles`). The ``experts`` best with a chunk that reaches
``min_similarity`` are chosen, and the ``passages`` most similar chunks among theirs go
into the prompt. A collection that cannot be read is skipped (and
named) when the request left the choice to us (``auto``), and is the request's error
when it was named.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import StoreError

from ...settings import Escalate, KnowledgeSettings
from .library import AUTO, Library
from .policy import strictest
from .search import Expert, LoadedCollection, Passage

__all__ = ["ExpertScore", "Retrieval", "Weights", "retrieve"]


@dataclass(frozen=True)
class Weights:
    """How much a collection's profile and its judged outcomes move its score."""

    profile: float = 0.0
    judged: float = 0.0

    @classmethod
    def of(cls, settings: KnowledgeSettings) -> Weights:
        return cls(settings.profile_weight, settings.judged_weight)


@dataclass(frozen=True)
class ExpertScore:
    name: str
    score: float  # what it was ranked by: chunk + the weighted profile and judged terms
    chosen: bool
    escalate: Escalate  # its privacy setting
    model: str | None = None  # the local model it prefers
    adapter: str | None = None  # the LoRA adapter its answers use
    chunk: float = float("-inf")  # its best chunk's similarity (-inf: none reached the floor)
    profile: float = 0.0  # the question's similarity to its profile
    judged: float = 0.5  # the rate of right answers among similar judged questions
    support: float = 0.0  # how many judged questions' worth that rate rests on

    def record(self) -> dict[str, object]:
        """JSON-ready: a score of a collection with no chunk above the floor is None."""
        fields = dataclasses.asdict(self)
        return {k: None if v == float("-inf") else v for k, v in fields.items()}


@dataclass(frozen=True)
class Retrieval:
    experts: tuple[ExpertScore, ...]  # best first
    passages: tuple[Passage, ...]  # best first; [1] is the first
    skipped: tuple[str, ...]  # "NAME: why", collections that could not be searched
    ms: float
    _experts: dict[str, Expert] = field(default_factory=dict, repr=False, compare=False)

    def used(self) -> list[str]:
        """The collections whose passages are in the prompt, sorted."""
        return sorted({p.collection for p in self.passages})

    def escalate(self) -> Escalate | None:
        """The privacy setting that holds: the most private of the collections whose
        passages are in the prompt (None: nothing was retrieved)."""
        used = self.used()
        return strictest(e.escalate for e in self.experts if e.name in used)

    def policy_source(self) -> str:
        held = self.escalate()
        return ", ".join(n for n in self.used() if self._setting(n) == held)

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
    weights: Weights = Weights(),
) -> Retrieval:
    started = time.perf_counter()
    auto = AUTO in names
    candidates = library.names() if auto else list(dict.fromkeys(names))
    scored: list[tuple[ExpertScore, list[tuple[int, float]]]] = []
    skipped: list[str] = []
    shelf: dict[str, LoadedCollection] = {}  # each loaded once: one version per request
    for name in candidates:
        try:
            loaded = shelf[name] = library.load(name)
        except StoreError as exc:
            if not auto:
                raise
            skipped.append(f"{name}: {exc}")
            continue
        hits = [h for h in loaded.nearest(question, passages) if h[1] >= min_similarity]
        setting = loaded.escalate or library.settings.escalate
        scored.append((_score(name, loaded, setting, question, hits, weights), hits))
    scored.sort(key=lambda s: -s[0].score)
    chosen = [s for s in scored if s[1]][:experts]
    pool = sorted(((e.name, hit) for e, hits in chosen for hit in hits), key=lambda x: -x[1][1])[
        :passages
    ]
    found: list[Passage] = []
    for e, _ in chosen:
        mine = [hit for owner, hit in pool if owner == e.name]
        found.extend(shelf[e.name].passages(mine) if mine else [])
    picked = {e.name for e, _ in chosen}
    return Retrieval(
        _experts={name: shelf[name].expert for name in picked},
        experts=tuple(dataclasses.replace(e, chosen=e.name in picked) for e, _ in scored),
        passages=tuple(sorted(found, key=lambda p: -p.score)),
        skipped=tuple(skipped),
        ms=(time.perf_counter() - started) * 1000,
    )


def _score(
    name: str,
    loaded: LoadedCollection,
    setting: Escalate,
    question: npt.NDArray[np.float32],
    hits: list[tuple[int, float]],
    weights: Weights,
) -> ExpertScore:
    expert = loaded.expert
    adapter = None if expert.adapter is None else expert.adapter.path
    chunk = hits[0][1] if hits else float("-inf")
    profile = loaded.profile.similarity(question)
    judged = loaded.profile.judged_rate(question)
    score = chunk + weights.profile * profile + weights.judged * (judged.rate - 0.5)
    return ExpertScore(
        name, score, False, setting, expert.model, adapter,
        chunk, profile, judged.rate, judged.support,
    )  # fmt: skip

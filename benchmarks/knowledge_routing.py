"""Expert selection among many small memory experts, for benchmarks/knowledge.py.

Each source file of datasets/knowledge-v1 becomes a collection of its own (20 experts, the
Mixture of Memory Experts setting), and the question is whether the one chosen holds the
answer. The score's parts are measured one at a time:

- the best chunk alone;
- + the profile (``knowledge.profile_weight``);
- + judged answers of two kinds, each kept with ``Library.judge`` as the product keeps them:
  *verdicts*: SmolLM2's answers to the train questions from the expert chosen, judged
  right or wrong by the matcher (what the broker's verdicts and ``calibrate --remember``
  give); *corrections*: a user's feedback naming the expert that holds the answer where the
  choice was wrong (``edge-agent feedback Q --right --knowledge HOLDER`` and ``--wrong``
  for the one chosen), and confirming it where it was right.

The weights are chosen on train by leave-one-out (each train question asked with the
judgments of the others, through :class:`Profile`, the class expert selection uses; a tie
goes to the smaller weight); test is then asked through ``retrieve`` with all of train
judged. Questions are asked as written and without the names of their company, device
or bakery, as a user asking their own documents would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
NAMES = (
    ("Kestrel & Vane Instruments", "the company"), ("Kestrel & Vane's", "the company's"),
    ("Kestrel & Vane", "the company"), ("the Aerolume AL-7", "the purifier"),
    ("Aerolume AL-7", "the purifier"), ("the Aerolume", "the purifier's"), ("AL-7", "purifier"),
    ("Aerolume", "the purifier's"), ("the Harrowgate", "the"), ("Harrowgate", "the"),
)  # fmt: skip
Judgment = tuple[str, str, bool]  # question, expert, right


def unnamed(question: str) -> str:
    """The question without the names that give its collection away."""
    for name, instead in NAMES:
        question = question.replace(name, instead)
    return question


def expert_name(item: Any) -> str:
    """The memory expert (one per source file) that holds the item's answer."""
    return f"{item.collection.split('-')[0]}-{Path(item.source).stem}"


def file_experts(agent: Any, root: Path, data: Path) -> Any:
    """A library of one collection per source file."""
    from edge_agent.knowledge.library import Library

    library = Library(agent.settings.knowledge, root, agent.embedder)
    for directory in sorted((data / "collections").iterdir()):
        for source in sorted(directory.iterdir()):
            library.add(f"{directory.name.split('-')[0]}-{source.stem}", [source])
    return library


class Router:
    """Expert selection over the file experts, with judgments swapped in and out."""

    def __init__(self, agent: Any, library: Any) -> None:
        self.agent, self.library = agent, library
        self._vectors: dict[str, Any] = {}

    def vector(self, question: str) -> Any:
        if question not in self._vectors:
            self._vectors[question] = self.agent.embedder.embed_one(question)
        return self._vectors[question]

    def pick(self, question: str, weights: Any = None) -> Any:
        from edge_agent.knowledge.library import AUTO, Weights, retrieve

        s = self.agent.settings.knowledge
        return retrieve(self.library, self.vector(question), [AUTO], experts=1,
                        passages=s.passages, min_similarity=s.min_similarity,
                        weights=weights or Weights())  # fmt: skip

    def chosen(self, question: str, weights: Any = None) -> str | None:
        return next((e.name for e in self.pick(question, weights).experts if e.chosen), None)

    def judge(self, judgments: list[Judgment]) -> None:
        for name in self.library.names():
            self.library.load(name).file.forget_judged()
        for question, expert, right in judgments:
            self.library.judge([expert], self.vector(question), right, "calibration")

    def accuracy(self, items: list[Any], weights: Any, strip: bool) -> float:
        asked = [(unnamed(i.prompt) if strip else i.prompt, expert_name(i)) for i in items]
        return sum(self.chosen(q, weights) == holder for q, holder in asked) / len(items)

    def loo(self, items: list[Any], judgments: list[Judgment], profile: float, w: float) -> float:
        """Leave-one-out accuracy on ``items``: each asked with the others' judgments."""
        from edge_agent.knowledge.library.profiles import Profile

        right = 0
        for item in items:
            q = self.vector(item.prompt)
            scores = {}
            for e in self.pick(item.prompt).experts:
                kept = [(self.vector(j[0]), j[2]) for j in judgments
                        if j[1] == e.name and j[0] != item.prompt]  # fmt: skip
                vectors = np.stack([v for v, _ in kept]) if kept else np.zeros((0, q.size))
                rate = Profile(vectors[:0], None, vectors, np.array([r for _, r in kept], bool))
                lean = rate.judged_rate(q).rate - 0.5
                scores[e.name] = e.chunk + profile * e.profile + w * lean
            right += max(scores, key=lambda n: scores[n]) == expert_name(item)
        return right / len(items)


def judgments_of(router: Router, observations: list[Any]) -> dict[str, list[Judgment]]:
    """Verdicts (each answer judged) and corrections (the holder named) for the answers."""
    verdicts: list[Judgment] = []
    corrections: list[Judgment] = []
    for o in observations:
        chosen, holder = router.chosen(o.item.prompt), expert_name(o.item)
        if chosen is None:
            continue
        verdicts.append((o.item.prompt, chosen, o.correct))
        corrections.append((o.item.prompt, chosen, chosen == holder))
        if chosen != holder:
            corrections.append((o.item.prompt, holder, True))
    return {"verdicts": verdicts, "corrections": corrections}


def routing_figures(
    agent: Any, train: list[Any], test: list[Any], root: Path, data: Path, answer_all: Any
) -> Any:
    """``answer_all(agent, items, experts, library)``: the local model's observations."""
    from edge_agent.knowledge.library import Weights

    library = file_experts(agent, root, data)
    router = Router(agent, library)
    router.judge([])
    profile = max(WEIGHTS, key=lambda w: (router.accuracy(train, Weights(w, 0.0), False), -w))
    rows: dict[str, list[float]] = {
        "best chunk": [router.accuracy(test, Weights(), s) for s in (False, True)],
        f"+ profile (weight {profile})": [
            router.accuracy(test, Weights(profile, 0.0), s) for s in (False, True)
        ],
    }
    answered = answer_all(agent, train, 1, library)
    chosen: dict[str, float] = {}
    for kind, judged in judgments_of(router, answered).items():
        w = max(WEIGHTS, key=lambda w: (router.loo(train, judged, profile, w), -w))
        chosen[kind] = w
        router.judge(judged)
        right = sum(j[2] for j in judged)
        label = f"+ {kind} (weight {w}; {len(judged)} judged, {right} right)"
        rows[label] = [router.accuracy(test, Weights(profile, w), s) for s in (False, True)]
    library.close()
    return {"experts": len(library.names()), "weights": {"profile": profile, **chosen},
            "accuracy": rows}  # fmt: skip

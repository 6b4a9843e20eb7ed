"""What expert selection knows of a collection besides its best chunk: its profile (what
the collection is about) and its judged outcomes (how its answers to similar questions
went).

The profile is the mean of the collection's chunk vectors, plus the embedding of its
description when it has one, normalised: a question about the collection's subject is
near it even when no single chunk shares its words.

Judged outcomes are the embeddings of questions the collection answered and whether the
answer was right (``edge-agent feedback --knowledge``, the broker's verdict on a draft).
A new question's rate is the similarity-weighted share of right answers among the judged
questions near it, smoothed toward one half: with nothing near it the rate is 0.5 and moves
nothing; a collection whose answers to questions like this one were judged wrong is chosen
less, one whose answers were right more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["JudgedRate", "Profile"]

Vector = npt.NDArray[np.float32]

# A judged question less similar than this to the new one says nothing about it (for
# all-MiniLM-L6-v2, questions about one fact sit above 0.6, unrelated ones below 0.3).
NEIGHBOUR_FLOOR = 0.5


@dataclass(frozen=True)
class JudgedRate:
    rate: float  # P(right) for questions like this one; 0.5 when nothing judged is near
    support: float  # the similarity-weighted count of judged questions behind it
    judged: int  # the collection's judged questions in all


class Profile:
    """A collection's profile vector and judged outcomes, made when it is loaded."""

    def __init__(
        self,
        chunks: Vector,
        description: Vector | None,
        judged: Vector,
        right: npt.NDArray[np.bool_],
    ) -> None:
        parts = [_unit(chunks.mean(axis=0))] if len(chunks) else []
        parts += [_unit(description)] if description is not None else []
        self.vector = _unit(np.sum(parts, axis=0)) if parts else None
        self._rows = (judged, right.astype(np.float32))  # replaced whole: readers see a pair

    def similarity(self, question: Vector) -> float:
        """Cosine similarity of the question to the profile (0 for an empty collection)."""
        return 0.0 if self.vector is None else float(self.vector @ question)

    def judged_rate(self, question: Vector) -> JudgedRate:
        judged, right = self._rows
        if not len(judged):
            return JudgedRate(0.5, 0.0, 0)
        near = np.clip((judged @ question - NEIGHBOUR_FLOOR) / (1 - NEIGHBOUR_FLOOR), 0, 1)
        support = float(near.sum())
        rate = (float(near @ right) + 1.0) / (support + 2.0)
        return JudgedRate(rate, support, len(judged))

    def add_judged(self, question: Vector, right: bool) -> None:
        """One more judged answer, as the file now holds it."""
        judged, rights = self._rows
        row = np.asarray(question, dtype=np.float32).reshape(1, -1)
        self._rows = (np.vstack([judged, row]), np.append(rights, np.float32(right)))


def _unit(vector: Vector) -> Vector:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)

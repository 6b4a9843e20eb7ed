"""What the outcome memory holds: a judged local answer (:class:`Outcome`), where it came
from, and the estimate made from the nearest ones (:class:`MemoryEstimate`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from ridgeline_core.errors import InvalidRequestError

__all__ = ["EmbedFn", "MemoryEstimate", "Outcome", "Source", "Vectors", "check_outcomes"]

Source = Literal["calibration", "feedback", "broker"]  # broker: its verdict on a draft
Vectors = npt.NDArray[np.float32]
EmbedFn = Callable[[Sequence[str]], Vectors]


@dataclass(frozen=True)
class Outcome:
    """One judged local answer."""

    prompt: str
    model: str
    right: bool
    source: Source
    time: float  # Unix seconds

    @classmethod
    def from_json(cls, data: Any) -> Outcome:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        prompt, model, right = data.get("prompt"), data.get("model"), data.get("right")
        source, at = data.get("source", "feedback"), data.get("time", 0.0)
        if not isinstance(prompt, str) or not prompt or not isinstance(model, str) or not model:
            raise ValueError("prompt and model must be non-empty strings")
        if not isinstance(right, bool):
            raise ValueError("right must be true or false")
        if source not in get_args(Source):
            raise ValueError(f"source {source!r} is not one of {get_args(Source)}")
        if not isinstance(at, (int, float)) or isinstance(at, bool):
            raise ValueError("time must be a number")
        return cls(prompt, model, right, source, float(at))


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory's P(right) for one prompt, and what it rests on."""

    probability: float  # P(right), shrunk toward base_rate
    base_rate: float  # the model's (Laplace-smoothed) rate of right answers
    support: float  # Σ w_i: how many neighbours' worth of evidence (0: none)
    max_similarity: float  # cosine similarity of the nearest past prompt
    neighbours: int  # past prompts with a weight > 0
    outcomes: int  # the model's outcomes in the memory

    def describe(self) -> str:
        return (
            f"memory {self.probability:.2f} from {self.neighbours} similar prompts "
            f"(support {self.support:.1f}, nearest {self.max_similarity:.2f}, "
            f"base rate {self.base_rate:.2f} of {self.outcomes})"
        )


def check_outcomes(outcomes: Sequence[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.source not in get_args(Source):
            raise InvalidRequestError(f"source {outcome.source!r} is not one of {get_args(Source)}")
        if not outcome.prompt or not outcome.model:
            raise InvalidRequestError("an outcome needs a prompt and a model")

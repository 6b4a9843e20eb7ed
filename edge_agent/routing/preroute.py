"""Pre-route: guess from the prompt alone, before any generation, whether the local model
stands a chance. Cheap features (length, task hints by regular expression) and, when the
outcome memory is on, how the local model did on similar past prompts; when the guess is
far below τ the agent skips local generation and escalates at once."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy.typing as npt

from ..settings import PreRouteSettings

if TYPE_CHECKING:
    from ..knowledge.memory import MemoryEstimate, OutcomeMemory

__all__ = ["PreRoute", "Prediction", "combine"]

_EDGE = 0.01  # probabilities are kept in [_EDGE, 1 - _EDGE] before taking logits


@dataclass(frozen=True)
class Prediction:
    confidence: float  # predicted confidence of a local answer, in [0, 1]
    hints: tuple[str, ...]  # task hints that matched
    prompt_chars: int
    rules: float | None = None  # the rules' part (length, hints); None: same as confidence
    memory: MemoryEstimate | None = None  # the outcome memory's estimate, when it had one

    def describe(self) -> str:
        found = ", ".join(self.hints) if self.hints else "no task hints"
        text = f"predicted {self.confidence:.2f} ({found}, {self.prompt_chars} chars"
        if self.memory is not None and self.rules is not None:
            text += f"; rules {self.rules:.2f}, {self.memory.describe()}"
        return text + ")"


def _logit(p: float) -> float:
    p = min(1.0 - _EDGE, max(_EDGE, p))
    return math.log(p / (1.0 - p))


def combine(rules: float, memory: float, base_rate: float, weight: float) -> float:
    """The rule prediction moved by the memory's evidence, in log-odds::

        logit(P) = logit(rules) + weight · (logit(memory) - logit(base_rate))

    The memory's estimate is shrunk toward the model's base rate when its neighbours are
    few or far, so its evidence, the log-odds it adds over that base rate, fades to 0 and
    the rule prediction stands; similar prompts the model got wrong pull P down, right ones
    up. The rules keep their own scale (their ``base`` for a plain prompt), so ``skip_margin``
    and τ mean what they meant without the memory.
    """
    shift = weight * (_logit(memory) - _logit(base_rate))
    return 1.0 / (1.0 + math.exp(-(_logit(rules) + shift)))


class PreRoute:
    """The pre-route's score; ``memory`` (an :class:`~edge_agent.knowledge.memory.OutcomeMemory`)
    adds the similar-prompt evidence when a prediction is given the prompt's embedding."""

    def __init__(self, settings: PreRouteSettings, memory: OutcomeMemory | None = None) -> None:
        self.settings = settings
        self.memory = memory
        self._hints = [
            (hint.name, re.compile(hint.pattern, re.IGNORECASE), hint.penalty)
            for hint in settings.hints
        ]

    def rules(self, prompt: str) -> tuple[float, tuple[str, ...]]:
        """The rules' prediction (length and task hints) and the hints that matched."""
        s = self.settings
        score = s.base - s.per_1000_chars * max(0, len(prompt) - s.long_chars) / 1000
        matched = []
        for name, pattern, penalty in self._hints:
            if pattern.search(prompt):
                matched.append(name)
                score -= penalty
        return min(1.0, max(0.0, score)), tuple(matched)

    def predict(
        self, prompt: str, vector: npt.ArrayLike | None = None, model: str | None = None
    ) -> Prediction:
        """The predicted confidence of ``model``'s answer to ``prompt``.

        The rules' score ``R`` (length, task hints), moved by the outcome memory's estimate
        ``M`` of P(right) from similar past prompts, relative to the model's base rate ``B``
        (see :func:`combine`)::

            logit(P) = logit(R) + memory.weight · (logit(M) - logit(B))

        The memory counts when there is one, ``vector`` (the prompt's embedding) and
        ``model`` are given, and it holds ``min_outcomes`` of the model's outcomes; else
        ``P = R``. Why this form and weight: on ridgeline-qa-v1's train split, 5-fold
        cross-validation (benchmarks/preroute_memory.py) gave the same AUROC for every
        weight > 0 (the rules put almost every prompt at one level, so the memory orders
        them) and the lowest log loss of P at 1.5; a linear blend of R and M scored a lower
        log loss only by dropping the rules, and then skipped half the prompts, including
        unfamiliar ones the memory knows nothing about."""
        score, matched = self.rules(prompt)
        estimate = None
        if self.memory is not None and vector is not None and model is not None:
            estimate = self.memory.estimate(model, vector)
        if estimate is None:
            return Prediction(score, matched, len(prompt))
        weight = self.settings.memory.weight
        combined = combine(score, estimate.probability, estimate.base_rate, weight)
        return Prediction(combined, matched, len(prompt), score, estimate)

    def skips(self, prediction: Prediction, tau: float) -> bool:
        return self.settings.enabled and prediction.confidence < tau - self.settings.skip_margin

"""Pre-route: guess from the prompt alone, before any generation, whether the local model
stands a chance. Cheap features only (length, task hints by regular expression); when the
guess is far below τ the agent skips local generation and escalates at once."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .settings import PreRouteSettings

__all__ = ["PreRoute", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    confidence: float  # predicted confidence of a local answer, in [0, 1]
    hints: tuple[str, ...]  # task hints that matched
    prompt_chars: int

    def describe(self) -> str:
        found = ", ".join(self.hints) if self.hints else "no task hints"
        return f"predicted {self.confidence:.2f} ({found}, {self.prompt_chars} chars)"


class PreRoute:
    def __init__(self, settings: PreRouteSettings) -> None:
        self.settings = settings
        self._hints = [
            (hint.name, re.compile(hint.pattern, re.IGNORECASE), hint.penalty)
            for hint in settings.hints
        ]

    def predict(self, prompt: str) -> Prediction:
        s = self.settings
        chars = len(prompt)
        score = s.base - s.per_1000_chars * max(0, chars - s.long_chars) / 1000
        matched = []
        for name, pattern, penalty in self._hints:
            if pattern.search(prompt):
                matched.append(name)
                score -= penalty
        return Prediction(min(1.0, max(0.0, score)), tuple(matched), chars)

    def skips(self, prediction: Prediction, tau: float) -> bool:
        return self.settings.enabled and prediction.confidence < tau - self.settings.skip_margin

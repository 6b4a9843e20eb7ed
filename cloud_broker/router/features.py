"""What the learned router sees of a prompt: its sentence embedding (the project's ONNX
encoder, all-MiniLM-L6-v2 by default) and a few cheap prompt features. Deterministic: the
same prompt gives the same vector."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PROMPT_FEATURES", "Featurizer", "prompt_features"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_WORDS = re.compile(r"[a-z']+")
_AUXILIARIES = {"is", "are", "can", "does", "do", "did", "was", "were", "will", "has", "have"}
_ARITHMETIC = {"plus", "minus", "times", "divided", "sum", "product", "multiplied", "add"}
PROMPT_FEATURES = (
    "log_chars",
    "digit_share",
    "numbers",
    "lines",
    "starts_with_auxiliary",
    "arithmetic_words",
    "question_mark",
)


def prompt_features(prompt: str) -> list[float]:
    """The cheap features, in the order of :data:`PROMPT_FEATURES`."""
    text = prompt.strip()
    words = _WORDS.findall(text.casefold())
    digits = sum(c.isdigit() for c in text)
    return [
        math.log1p(len(text)) / 8,
        digits / max(1, len(text)),
        min(len(_NUMBER.findall(text)), 8) / 4,
        min(text.count("\n") + 1, 20) / 10,
        float(bool(words) and words[0] in _AUXILIARIES),
        float(
            any(word in _ARITHMETIC for word in words)
            or bool(re.search(r"\d\s*[-+*/x]\s*\d", text))
        ),
        float(text.endswith("?")),
    ]


class Featurizer:
    """Prompts to feature rows: the encoder's vector followed by the prompt features."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder

    @property
    def dim(self) -> int:
        """The encoder's vector width (the prompt features follow it in a row)."""
        return int(self.encoder.dim)

    def rows(self, prompts: Sequence[str]) -> npt.NDArray[np.float64]:
        vectors = np.asarray(self.encoder.embed(list(prompts)), dtype=np.float64)
        extra = np.asarray([prompt_features(p) for p in prompts], dtype=np.float64)
        return np.hstack([vectors, extra])

    def close(self) -> None:
        self.encoder.close()

"""The probability of each candidate's first token after a prompt: one forward pass of
llama.cpp, the logits of the last position, a softmax (used to pick among labels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelError
from .llama_vocab import LlamaVocab

__all__ = ["first_token", "first_token_probs", "last_logits"]


def first_token(vocab: LlamaVocab, candidate: str) -> int:
    ids = vocab.tokenize(candidate, add_special=False)
    if not ids:
        raise ValueError(f"candidate {candidate!r} has no tokens")
    return ids[0]


def last_logits(lib: Any, llm: Any, vocab: LlamaVocab, tokens: list[int], name: str) -> Any:
    """The logits after ``tokens`` (the model's context is reset first)."""
    try:
        llm.reset()
        llm.eval(tokens)
    except RuntimeError as exc:
        raise ModelError(f"{name}: evaluation failed: {exc}") from exc
    return np.ctypeslib.as_array(
        lib.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(vocab.size,)
    ).astype(np.float64)


def first_token_probs(logits: Any, firsts: Sequence[int]) -> list[float]:
    """Softmax of ``logits``, read at each candidate's first token."""
    logits -= logits.max()
    probs = np.exp(logits)
    probs /= probs.sum()
    return [float(probs[token]) for token in firsts]

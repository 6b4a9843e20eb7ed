"""How much of the context the next prompt keeps, so that its answer is the answer a fresh
context gives: temperature 0 repeats whatever the model ran before.

llama.cpp's numbers for a prompt token depend, in the last bits, on the batch that
evaluated it. llama-cpp-python keeps the part of the context a new prompt shares with the
last one and evaluates only the rest (at least the last token, alone); those logits differ
slightly from a fresh evaluation, enough to change a greedy answer. A fresh context
evaluates a prompt in chunks of ``n_batch`` tokens from position 0, so a prompt keeps only
the whole chunks it shares with the previous prompt (evaluated exactly as it would
evaluate them: the same tokens, the same batch) and evaluates the rest in the chunks a
fresh context uses. Never kept: generated tokens (evaluated one at a time), a partial
last chunk, and the prompt's last token (its logits are sampled from).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PromptChunks"]


class PromptChunks:
    """The whole ``chunk``-token chunks of the last prompt, which the next may keep."""

    def __init__(self, chunk: int) -> None:
        self._chunk = chunk
        self._whole: list[int] = []  # the tokens of the last prompt's whole chunks

    def keep(self, llm: Any, prompt: list[int]) -> int:
        """Cut ``llm``'s context to the whole chunks ``prompt`` shares with it (the rest is
        evaluated by ``Llama.generate``); the number of tokens kept."""
        limit = min(int(llm.n_tokens), len(self._whole), len(prompt) - 1)
        # the context holds what was really evaluated (a cancelled or failed prompt
        # evaluation leaves less than the last prompt); another user of the context
        # (a probe) evaluates from position 0 in the same chunks
        evaluated = llm.input_ids[: max(0, limit)].tolist()
        shared = 0
        for cached, whole, wanted in zip(evaluated, self._whole, prompt, strict=False):
            if not cached == whole == wanted:
                break
            shared += 1
        kept = shared - shared % self._chunk
        if kept:
            llm.n_tokens = kept  # Llama.generate cuts the KV cache after these
        else:
            llm.reset()
        self._whole = prompt[: len(prompt) - len(prompt) % self._chunk]
        return kept

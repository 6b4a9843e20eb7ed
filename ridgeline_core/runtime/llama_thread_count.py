"""The thread count of a loaded llama.cpp model, changed between generations.

``llama_set_n_threads`` sets the threads of the next decodes (single tokens) and of the
next prompt evaluations (batches) on the context; the model stays loaded. The count a
generation uses changes its speed, not its numbers: each thread computes whole rows of a
matrix product, so a greedy answer is the same with one thread or several
(tests/test_adaptive_threads.py checks it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ThreadCount"]


class ThreadCount:
    """The context's thread counts: as loaded, and the one in effect."""

    def __init__(self, lib: Any, llm: Any) -> None:
        self._lib, self._llm = lib, llm
        self.loaded = (int(llm.n_threads), int(llm.n_threads_batch))
        self.current = self.loaded

    def use(self, threads: int | None) -> int:
        wanted = self.loaded if threads is None else (max(1, threads), max(1, threads))
        if wanted != self.current:
            self._lib.llama_set_n_threads(self._llm.ctx, *wanted)
            self.current = wanted
        return self.current[0]

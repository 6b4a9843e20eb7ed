"""A grammar tried on llama.cpp before it reaches a sampler: llama-cpp-python adds a
grammar that llama.cpp refused to its sampler chain unchecked, which would crash the
process rather than fail the request."""

from __future__ import annotations

from typing import Any

from .llama_vocab import LlamaVocab

__all__ = ["llama_parses"]


def llama_parses(lib: Any, vocab: LlamaVocab, grammar: str) -> bool:
    """llama.cpp accepts ``grammar`` (GBNF, rule ``root``) for this vocabulary."""
    sampler = lib.llama_sampler_init_grammar(vocab.handle, grammar.encode("utf-8"), b"root")
    if not sampler:
        return False
    lib.llama_sampler_free(sampler)
    return True

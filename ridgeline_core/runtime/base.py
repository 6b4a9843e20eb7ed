"""The runtime seam: a small interface, and a registry from runtime name to adapter.

Adapters are registered by import path, so looking one up imports its heavy
library (llama_cpp, onnxruntime) only when a model of that kind is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..closing import Closing
from ..errors import ModelError
from ..store.manifest import ModelManifest
from .types import (
    ChatMessage,
    FinishReason,
    GenerationStats,
    LoadOptions,
    SamplingParams,
    ShortGeneration,
    Token,
)

__all__ = [
    "Generation",
    "Runtime",
    "RuntimeFactory",
    "ShortAnswerRuntime",
    "load_runtime",
    "register_runtime",
    "registered_runtimes",
]


class Generation(Iterator[Token], Closing):
    """One streaming generation: iterate for tokens, read :attr:`stats` at the end.

    :meth:`close` (or leaving a ``with`` block) stops the generation early and
    frees the model for the next request; ``stats.finish_reason`` is then
    ``cancelled``. One thread drives a generation from start to end; the model
    runs one generation at a time and others wait for it.
    """

    def __init__(self, tokens: Iterator[Token], stats: GenerationStats) -> None:
        self._tokens = tokens
        self.stats = stats

    def __next__(self) -> Token:
        return next(self._tokens)

    def close(self) -> None:
        close = getattr(self._tokens, "close", None)
        if close is not None:
            close()
        if self.stats.finish_reason is None:  # closed before it started
            self.stats.finish_reason = FinishReason.CANCELLED

    @property
    def text(self) -> str:
        """Consume the rest of the stream and return its text."""
        return "".join(token.text for token in self)


class Runtime(Protocol):
    """A loaded model that generates text with per-token signals."""

    kind: str
    manifest: ModelManifest
    context_length: int
    load_seconds: float

    def generate(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        """Apply the model's chat template and stream the answer."""

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text :meth:`generate` would send for ``messages``."""

    def complete(
        self, prompt: str, params: SamplingParams, *, control_tokens: bool = True
    ) -> Generation:
        """Stream a continuation of raw prompt text (no template). ``control_tokens=False``
        reads all of it as plain text: ``<|im_end|>`` in it stays those characters (for a
        prompt that carries someone else's text)."""

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's vocabulary."""

    def next_token_probs(
        self, messages: Sequence[ChatMessage], candidates: Sequence[str]
    ) -> list[float]:
        """For a chat whose assistant turn is about to start, the probability that the
        answer's first token is the first token of each candidate (one forward pass)."""

    def close(self) -> None:
        """Free the model's memory; the runtime is unusable afterwards."""


@runtime_checkable
class ThreadedRuntime(Protocol):
    """A runtime whose thread count can change between generations (llama.cpp)."""

    @property
    def loaded_threads(self) -> int:
        """The threads it was loaded with."""

    def use_threads(self, threads: int | None) -> int:
        """Generate with ``threads`` from now on (None: as loaded); the count in effect."""


@runtime_checkable
class ShortAnswerRuntime(Protocol):
    """A runtime that answers several few-shot prompts in one batch, keeping each fixed
    prefix's state between calls (llama.cpp; :mod:`.llama_short`)."""

    def short_answers(
        self,
        prompts: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        together: bool = True,
        fresh: bool = False,
        samples: int = 0,
        temperature: float = 0.8,
        seed: int = 0,
    ) -> list[ShortGeneration]:
        """Greedy answers to ``prefix + suffix`` for each (prefix, suffix), each to its
        first newline, then ``samples`` sampled answers to the first (see
        LlamaCppRuntime.short_answers)."""


RuntimeFactory = Callable[[ModelManifest, Path, LoadOptions], Runtime]

_REGISTRY: dict[str, str | RuntimeFactory] = {
    "llama.cpp": "ridgeline_core.runtime.llama_cpp:LlamaCppRuntime",
    "scripted": "ridgeline_core.runtime.scripted:ScriptedRuntime",  # tests, app developers
}


def register_runtime(name: str, factory: str | RuntimeFactory) -> None:
    """Register an adapter: a factory, or ``"module:attribute"`` imported on first use."""
    _REGISTRY[name] = factory


def registered_runtimes() -> list[str]:
    return sorted(_REGISTRY)


def load_runtime(manifest: ModelManifest, path: Path, options: LoadOptions) -> Runtime:
    """Load ``path`` (already verified) with the adapter the manifest names."""
    try:
        entry = _REGISTRY[manifest.runtime]
    except KeyError:
        known = ", ".join(registered_runtimes())
        raise ModelError(
            f"model {manifest.name!r} needs runtime {manifest.runtime!r}, which is not "
            f"available (available: {known})"
        ) from None
    if isinstance(entry, str):
        module_name, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module_name), attribute)
        _REGISTRY[manifest.runtime] = entry
    factory: RuntimeFactory = entry
    return factory(manifest, path, options)

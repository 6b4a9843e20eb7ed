"""llama.cpp adapter (llama-cpp-python): GGUF models with per-token signals.

Signals are read from the logits row llama.cpp's sampler just used: after
``Llama.generate`` yields a token, ``llama_get_logits_ith(ctx, -1)`` still
points at the logits that token was sampled from, so we take a zero-copy numpy
view of it. No ``logits_all=True`` (which keeps a row per prompt token and
slows prompt processing) and no custom sampler in the sampling chain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelError, PromptTooLongError
from ..store.manifest import ModelManifest
from .base import Generation
from .choices import check_choices, choices_grammar
from .llama_decode import Decoder
from .llama_grammar import llama_parses
from .llama_lib import import_llama_cpp
from .llama_load import llama_parts, load_llama
from .llama_probe import first_token, first_token_probs, last_logits
from .llama_prompt import ChatPrompt
from .llama_short import ShortAnswers
from .llama_thread_count import ThreadCount
from .llama_vocab import LlamaVocab
from .model_lock import ModelLock
from .threads import default_threads
from .types import (
    ChatMessage,
    GenerationStats,
    LoadOptions,
    SamplingParams,
    ShortGeneration,
    Token,
)

__all__ = ["LlamaCppRuntime", "default_threads"]

log = logging.getLogger(__name__)


class _LlamaReading:
    """What a loaded model says about text without generating: its prompt, its token
    counts, the probability of each candidate's first token."""

    manifest: ModelManifest
    context_length: int
    _lib: Any
    _llm: Any
    _vocab: LlamaVocab
    _prompt: ChatPrompt
    _decoder: Decoder
    _lock: ModelLock

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the chat template makes of ``messages``."""
        return self._prompt.render(messages)

    def count_tokens(self, text: str) -> int:
        with self._lock.using():
            return len(self._vocab.tokenize(text, add_special=False))

    def next_token_probs(
        self, messages: Sequence[ChatMessage], candidates: Sequence[str]
    ) -> list[float]:
        with self._lock.using():
            tokens = self._prompt.tokens(messages)
            if len(tokens) >= self.context_length:
                raise PromptTooLongError.for_prompt(len(tokens), self.context_length)
            firsts = [first_token(self._vocab, candidate) for candidate in candidates]
            self._decoder.adapters.apply(())  # the model as it is (the context is reset)
            logits = last_logits(self._lib, self._llm, self._vocab, tokens, self.manifest.name)
        return first_token_probs(logits, firsts)

    def _chat_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self._prompt.tokens(messages)

    def _control_count(self, tokens: list[int]) -> int:
        return self._vocab.control_count(tokens)


class _LlamaStarting:
    """Starting a generation on prompt tokens: the context check, the choices grammar
    (checked to parse here), and the token loop run while holding the model."""

    manifest: ModelManifest
    context_length: int
    _lib: Any
    _vocab: LlamaVocab
    _decoder: Decoder
    _lock: ModelLock

    def _start_tokens(
        self, tokens: list[int], params: SamplingParams, stops: Sequence[str]
    ) -> Generation:
        if len(tokens) >= self.context_length:
            raise PromptTooLongError.for_prompt(len(tokens), self.context_length)
        grammar = self._choices_grammar(params.choices) if params.choices else None
        stats = GenerationStats(prompt_tokens=len(tokens))
        return Generation(self._run(tokens, params, stops, grammar, stats), stats)

    def _choices_grammar(self, choices: Sequence[str]) -> Any:
        """A ``LlamaGrammar`` for exactly one of ``choices``, checked to parse here:
        llama-cpp-python adds a grammar that llama.cpp refused to its sampler chain
        unchecked, which would crash the process rather than fail the request."""
        text = choices_grammar(check_choices(choices))
        with self._lock.using():
            parses = llama_parses(self._lib, self._vocab, text)
        if not parses:
            raise ModelError(f"{self.manifest.name}: llama.cpp refused the choices grammar")
        return self._lib.LlamaGrammar.from_string(text, verbose=False)

    def _run(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        stops: Sequence[str],
        grammar: Any,
        stats: GenerationStats,
    ) -> Iterator[Token]:
        with self._lock.owned():
            yield from self._decoder.decode(prompt_tokens, params, stops, grammar, stats)


class _LlamaShortAnswers:
    """Few-shot probes answered together from kept frame states (:mod:`.llama_short`)."""

    _short: ShortAnswers
    _threads: ThreadCount
    _lock: ModelLock

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
        """Greedy answers to ``prefix + suffix`` for each (prefix, suffix), to the first
        newline, then ``samples`` sampled answers to the first; each prefix's state is
        kept for the next call (``fresh``: not used). ``together``: one batch for all
        (else one prompt after the other). See :mod:`.llama_short`."""
        with self._lock.using():
            if fresh:
                self._short.forget()
            return self._short.answer(
                prompts, max_tokens=max_tokens, threads=self._threads.current,
                together=together, samples=samples, temperature=temperature, seed=seed,
            )  # fmt: skip


class LlamaCppRuntime(_LlamaReading, _LlamaStarting, _LlamaShortAnswers):
    """A GGUF model loaded by llama.cpp: its vocabulary (:mod:`.llama_vocab`), its chat
    prompt (:mod:`.llama_prompt`) and its token loop (:mod:`.llama_decode`), used by one
    generation at a time."""

    kind = "llama.cpp"

    def __init__(self, manifest: ModelManifest, path: Path, options: LoadOptions) -> None:
        self._lib = import_llama_cpp()
        self.manifest = manifest
        self.options = options
        started = time.perf_counter()
        self._llm = load_llama(self._lib, manifest, path, options)
        self.load_seconds = time.perf_counter() - started
        parts = llama_parts(self._lib, self._llm, manifest, options.signals)
        self.context_length = parts.context_length
        self._vocab, self._prompt, self._decoder = parts.vocab, parts.prompt, parts.decoder
        self._lock = ModelLock(manifest.name)
        self._threads = ThreadCount(self._lib, self._llm)
        self._short = ShortAnswers(self._lib, self._llm, self._vocab, manifest.name)

    # -- Runtime interface ---------------------------------------------------------

    def generate(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        with self._lock.using():
            tokens = self._prompt.tokens(messages)
        return self._start_tokens(tokens, params, (*params.stop, *self.manifest.stop))

    def complete(
        self, prompt: str, params: SamplingParams, *, control_tokens: bool = True
    ) -> Generation:
        # Let the vocabulary add BOS unless the template already wrote it.
        written = control_tokens and bool(self._vocab.bos_text)
        add_bos = not (written and prompt.startswith(self._vocab.bos_text))
        with self._lock.using():
            tokens = self._vocab.tokenize(prompt, add_special=add_bos, control=control_tokens)
        return self._start_tokens(tokens, params, params.stop)

    @property
    def loaded_threads(self) -> int:
        return self._threads.loaded[0]

    def use_threads(self, threads: int | None) -> int:
        """Generate (prompt and tokens) with ``threads`` from now on; None: as loaded."""
        with self._lock.using():
            return self._threads.use(threads)

    def close(self) -> None:
        """Free the model once no generation is running (waits up to a minute for one)."""
        if not self._lock.close(self._free):  # a generation was abandoned: leak
            log.warning("%s is still generating; not freeing it", self.manifest.name)

    def _free(self) -> None:
        self._short.close()
        self._llm.close()

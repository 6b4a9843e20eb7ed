"""llama.cpp adapter (llama-cpp-python): GGUF models with per-token signals.

Signals are read from the logits row llama.cpp's sampler just used: after
``Llama.generate`` yields a token, ``llama_get_logits_ith(ctx, -1)`` still
points at the logits that token was sampled from, so we take a zero-copy numpy
view of it. No ``logits_all=True`` (which keeps a row per prompt token and
slows prompt processing) and no custom sampler in the sampling chain.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, ModelError, ModelLoadError, PromptTooLongError
from ..store.manifest import ModelManifest
from .base import Generation
from .choices import check_choices, choices_grammar
from .llama_decode import Decoder
from .llama_prompt import ChatPrompt
from .llama_vocab import LlamaVocab
from .signals import SignalComputer
from .types import ChatMessage, GenerationStats, LoadOptions, SamplingParams, Token

__all__ = ["LlamaCppRuntime", "default_threads"]

log = logging.getLogger(__name__)
native_log = logging.getLogger("ridgeline.llama_cpp")

# ggml.h: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_log_state = {"level": logging.DEBUG}
_log_callback: Any = None


def _import_llama_cpp() -> Any:
    """Import llama_cpp and route its native log lines into Python logging."""
    global _log_callback
    try:
        import llama_cpp
        import llama_cpp._logger
    except ImportError as exc:
        raise MissingDependencyError.for_module("llama-cpp-python", "edge") from exc
    if _log_callback is None:

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def forward(level: int, text: bytes, _: ctypes.c_void_p) -> None:
            if level != 5:
                _log_state["level"] = _GGML_LEVELS.get(level, logging.DEBUG)
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                native_log.log(_log_state["level"], "%s", message)

        _log_callback = forward
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    return llama_cpp


class LlamaCppRuntime:
    """A GGUF model loaded by llama.cpp: its vocabulary (:mod:`.llama_vocab`), its chat
    prompt (:mod:`.llama_prompt`) and its token loop (:mod:`.llama_decode`), used by one
    generation at a time."""

    kind = "llama.cpp"

    def __init__(self, manifest: ModelManifest, path: Path, options: LoadOptions) -> None:
        self._lib = _import_llama_cpp()
        self.manifest = manifest
        self.options = options
        started = time.perf_counter()
        self._llm = _load(self._lib, manifest, path, options)
        try:
            self.load_seconds = time.perf_counter() - started
            self.context_length = int(self._llm.n_ctx())
            self._vocab = LlamaVocab(self._lib, self._llm)
            signals = SignalComputer(self._vocab.size) if options.signals else None
            self._prompt = ChatPrompt(manifest, self._llm, self._vocab)
            self._decoder = Decoder(
                self._lib, self._llm, self._vocab, signals,
                name=manifest.name, context_length=self.context_length,
            )  # fmt: skip
        except BaseException:
            self._llm.close()
            raise
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._closed = False

    # -- Runtime interface ---------------------------------------------------------

    def generate(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        with self._using_model():
            tokens = self._prompt.tokens(messages)
        return self._start_tokens(tokens, params, (*params.stop, *self.manifest.stop))

    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        # Let the vocabulary add BOS unless the template already wrote it.
        bos = self._vocab.bos_text
        with self._using_model():
            tokens = self._vocab.tokenize(prompt, add_special=not (bos and prompt.startswith(bos)))
        return self._start_tokens(tokens, params, params.stop)

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the chat template makes of ``messages``."""
        return self._prompt.render(messages)

    def count_tokens(self, text: str) -> int:
        with self._using_model():
            return len(self._vocab.tokenize(text, add_special=False))

    def next_token_probs(
        self, messages: Sequence[ChatMessage], candidates: Sequence[str]
    ) -> list[float]:
        with self._using_model():
            tokens = self._prompt.tokens(messages)
            if len(tokens) >= self.context_length:
                raise PromptTooLongError.for_prompt(len(tokens), self.context_length)
            firsts = [self._first_token(candidate) for candidate in candidates]
            logits = self._last_logits(tokens)
        logits -= logits.max()
        probs = np.exp(logits)
        probs /= probs.sum()
        return [float(probs[token]) for token in firsts]

    def close(self) -> None:
        """Free the model once no generation is running (waits up to a minute for one)."""
        self._closed = True
        if self._lock.acquire(timeout=60):
            try:
                self._llm.close()
            finally:
                self._lock.release()
        else:  # a generation was abandoned without close(): leak rather than crash
            log.warning("%s is still generating; not freeing it", self.manifest.name)

    # -- helpers -------------------------------------------------------------------

    def _chat_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self._prompt.tokens(messages)

    def _control_count(self, tokens: list[int]) -> int:
        return self._vocab.control_count(tokens)

    def _first_token(self, candidate: str) -> int:
        ids = self._vocab.tokenize(candidate, add_special=False)
        if not ids:
            raise ValueError(f"candidate {candidate!r} has no tokens")
        return ids[0]

    def _last_logits(self, tokens: list[int]) -> Any:
        llm = self._llm
        try:
            llm.reset()
            llm.eval(tokens)
        except RuntimeError as exc:
            raise ModelError(f"{self.manifest.name}: evaluation failed: {exc}") from exc
        return np.ctypeslib.as_array(
            self._lib.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(self._vocab.size,)
        ).astype(np.float64)

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
        with self._using_model():
            sampler = self._lib.llama_sampler_init_grammar(
                self._vocab.handle, text.encode("utf-8"), b"root"
            )
        if not sampler:
            raise ModelError(f"{self.manifest.name}: llama.cpp refused the choices grammar")
        self._lib.llama_sampler_free(sampler)
        return self._lib.LlamaGrammar.from_string(text, verbose=False)

    def _run(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        stops: Sequence[str],
        grammar: Any,
        stats: GenerationStats,
    ) -> Iterator[Token]:
        with self._using_model():
            self._owner = threading.get_ident()
            try:
                yield from self._decoder.decode(prompt_tokens, params, stops, grammar, stats)
            finally:
                self._owner = None

    @contextlib.contextmanager
    def _using_model(self) -> Iterator[None]:
        """Exclusive use of the loaded model; refuses once it is closed."""
        if self._owner == threading.get_ident():
            raise ModelError("a generation is already running on this model in this thread")
        with self._lock:
            if self._closed:
                raise ModelError(f"{self.manifest.name} was unloaded")
            yield


def _load(lib: Any, manifest: ModelManifest, path: Path, options: LoadOptions) -> Any:
    """The ``Llama`` object for ``path`` (verified already) with ``options``."""
    if options.n_gpu_layers != 0 and not lib.llama_supports_gpu_offload():
        log.warning(
            "n_gpu_layers=%d ignored: this llama-cpp-python build has no GPU offload "
            "(see packaging/INSTALL.md for CUDA and Metal builds)",
            options.n_gpu_layers,
        )
    n_ctx = options.n_ctx
    if manifest.context_length is not None:
        n_ctx = min(n_ctx, manifest.context_length)
    threads = options.n_threads or default_threads()
    try:
        return lib.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(options.n_batch, n_ctx),
            n_threads=threads,
            n_threads_batch=options.n_threads_batch or threads,
            n_gpu_layers=options.n_gpu_layers,
            logits_all=False,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {manifest.name} ({path}): {exc}") from exc


def default_threads() -> int:
    """Physical cores this process may use, within its CPU affinity and cgroup quota.

    Hyperthread siblings share a core's arithmetic units, so llama.cpp decodes no
    faster (often slower) with one thread per logical CPU.
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus is None:
        return os.cpu_count() or 1
    cores: set[str] = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    count = len(cores)
    try:  # cgroup v2 quota, e.g. a container limited to 2 CPUs: "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)

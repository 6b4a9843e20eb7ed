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
import random
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    InvalidRequestError,
    MissingDependencyError,
    ModelError,
    ModelLoadError,
    PromptTooLongError,
    TemplateError,
)
from ..store.manifest import ModelManifest
from .base import Generation
from .choices import ChoiceHolder, check_choices, choices_grammar
from .signals import SignalComputer
from .template import ChatTemplate
from .text import StopMatcher, Utf8Stream
from .types import (
    ChatMessage,
    FinishReason,
    GenerationStats,
    LoadOptions,
    SamplingParams,
    Token,
    TokenSignals,
)

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
    kind = "llama.cpp"

    def __init__(self, manifest: ModelManifest, path: Path, options: LoadOptions) -> None:
        llama_cpp = _import_llama_cpp()
        self._lib = llama_cpp
        self.manifest = manifest
        self.options = options
        if options.n_gpu_layers != 0 and not llama_cpp.llama_supports_gpu_offload():
            log.warning(
                "n_gpu_layers=%d ignored: this llama-cpp-python build has no GPU offload "
                "(see packaging/INSTALL.md for CUDA and Metal builds)",
                options.n_gpu_layers,
            )
        n_ctx = options.n_ctx
        if manifest.context_length is not None:
            n_ctx = min(n_ctx, manifest.context_length)
        threads = options.n_threads or default_threads()
        started = time.perf_counter()
        try:
            self._llm = llama_cpp.Llama(
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
            raise ModelLoadError(
                f"llama.cpp could not load {manifest.name} ({path}): {exc}"
            ) from exc
        try:
            self.load_seconds = time.perf_counter() - started
            self.context_length = int(self._llm.n_ctx())
            self._vocab = self._llm._model.vocab
            self._n_vocab = int(self._llm.n_vocab())
            self._signals = SignalComputer(self._n_vocab) if options.signals else None
            self._pieces: dict[int, bytes] = {}
            self._bos_text = self._token_text(self._llm.token_bos())
            self._eos_text = self._token_text(self._llm.token_eos())
            self._template_source = manifest.chat_template or self._llm.metadata.get(
                "tokenizer.chat_template"
            )
            self._template: ChatTemplate | None = None
        except BaseException:
            self._llm.close()
            raise
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._closed = False

    # -- Runtime interface ---------------------------------------------------------

    def generate(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        with self._using_model():
            tokens = self._chat_tokens(messages)
        return self._start_tokens(tokens, params, (*params.stop, *self.manifest.stop))

    def complete(self, prompt: str, params: SamplingParams) -> Generation:
        return self._start(prompt, params, params.stop)

    def count_tokens(self, text: str) -> int:
        with self._using_model():
            return len(self._tokenize(text, add_special=False))

    def next_token_probs(
        self, messages: Sequence[ChatMessage], candidates: Sequence[str]
    ) -> list[float]:
        with self._using_model():
            tokens = self._chat_tokens(messages)
            if len(tokens) >= self.context_length:
                raise PromptTooLongError.for_prompt(len(tokens), self.context_length)
            firsts = []
            for candidate in candidates:
                ids = self._tokenize(candidate, add_special=False)
                if not ids:
                    raise ValueError(f"candidate {candidate!r} has no tokens")
                firsts.append(ids[0])
            llm = self._llm
            try:
                llm.reset()
                llm.eval(tokens)
            except RuntimeError as exc:
                raise ModelError(f"{self.manifest.name}: evaluation failed: {exc}") from exc
            logits = np.ctypeslib.as_array(
                self._lib.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(self._n_vocab,)
            ).astype(np.float64)
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

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the chat template makes of ``messages``."""
        return self._chat_template().render(self._with_system(messages))

    def _chat_template(self) -> ChatTemplate:
        if self._template is None:
            if not self._template_source:
                raise TemplateError(
                    f"{self.manifest.name} has no chat template; set chat_template in its manifest"
                )
            self._template = ChatTemplate(
                self._template_source, bos_token=self._bos_text, eos_token=self._eos_text
            )
        return self._template

    def _with_system(self, messages: Sequence[ChatMessage]) -> Sequence[ChatMessage]:
        if self.manifest.system_prompt and not any(m.role == "system" for m in messages):
            return [ChatMessage("system", self.manifest.system_prompt), *messages]
        return messages

    def _chat_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Tokens of the templated conversation, where only the template's own text may
        become control tokens: a message that contains "<|im_end|>" is those characters,
        not the end of its turn, so no one can forge a turn or a system message.

        Messages without such text (nearly all) tokenize exactly as the rendered prompt
        always did. Otherwise the template is rendered with a placeholder per message,
        and the text between placeholders is tokenized with control tokens parsed, each
        message without.
        """
        messages = self._with_system(messages)
        template = self._chat_template()
        marks = [f"\ue000{index}\ue001" for index in range(len(messages))]
        text = template.render(
            [ChatMessage(m.role, mark) for m, mark in zip(messages, marks, strict=True)]
        )
        if not any(self._has_control_text(m.content) for m in messages):
            prompt = template.render(messages)
            add_special = not (self._bos_text and prompt.startswith(self._bos_text))
            tokens = self._tokenize(prompt, add_special=add_special)
            # messages that only form a control token together (a template that joins
            # them with nothing between) show up as more control tokens than the
            # template writes itself
            expected = self._control_count(self._tokenize(text, add_special=add_special))
            if self._control_count(tokens) == expected:
                return tokens
        pieces: list[tuple[str, bool]] = []  # (text, parse control tokens)
        rest = text
        for message, mark in zip(messages, marks, strict=True):
            before, found, rest = rest.partition(mark)
            if not found or mark in rest:
                raise InvalidRequestError(
                    f"a message contains text of a control token of {self.manifest.name} "
                    "and its chat template transforms messages, so it cannot be kept as "
                    "plain text; remove the control token"
                )
            pieces += [(before, True), (message.content, False)]
        pieces.append((rest, True))
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        split: list[int] = []
        for index, (piece, special) in enumerate(pieces):
            if piece or (index == 0 and add_bos):
                split += self._llm.tokenize(
                    piece.encode("utf-8"), add_bos=add_bos and index == 0, special=special
                )
        return split

    def _control_count(self, tokens: list[int]) -> int:
        attr = self._lib.llama_vocab_get_attr
        control = self._lib.LLAMA_TOKEN_ATTR_CONTROL
        return sum(1 for token in tokens if attr(self._vocab, token) & control)

    def _has_control_text(self, text: str) -> bool:
        encoded = text.encode("utf-8")
        tokenize = self._llm.tokenize
        return bool(
            tokenize(encoded, add_bos=False, special=True)
            != tokenize(encoded, add_bos=False, special=False)
        )

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._llm._model.token_get_text(token))

    def _tokenize(self, text: str, add_special: bool) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            size = 64
            while True:
                buffer = ctypes.create_string_buffer(size)
                n = self._lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
                if n >= 0:
                    piece = buffer.raw[:n]
                    break
                size = -n
            self._pieces[token] = piece
        return piece

    def _start(self, prompt: str, params: SamplingParams, stops: Sequence[str]) -> Generation:
        # Let the vocabulary add BOS unless the template already wrote it.
        add_special = not (self._bos_text and prompt.startswith(self._bos_text))
        with self._using_model():
            tokens = self._tokenize(prompt, add_special=add_special)
        return self._start_tokens(tokens, params, stops)

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
                self._vocab, text.encode("utf-8"), b"root"
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
                yield from self._decode(prompt_tokens, params, stops, grammar, stats)
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

    def _decode(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        stops: Sequence[str],
        grammar: Any,
        stats: GenerationStats,
    ) -> Iterator[Token]:
        """Tokens of the answer. With ``grammar`` (a choices answer) the grammar ends the
        answer once a choice is complete, so max_tokens and stop sequences do not apply,
        and the text is held back until it is known to be a whole choice."""
        room = self.context_length - len(prompt_tokens)
        budget = room if grammar is not None else min(params.max_tokens, room)
        matcher: StopMatcher | ChoiceHolder = (
            ChoiceHolder(params.choices, self.manifest.name)
            if grammar is not None
            else StopMatcher(stops)
        )
        out = _Output(matcher, Utf8Stream(), _HeldTokens(), stats)
        finish = FinishReason.LENGTH
        started = time.perf_counter()
        tokens = self._sample(prompt_tokens, params, grammar)
        try:
            finish = yield from self._tokens(tokens, budget, out, started)
            if grammar is not None and finish is FinishReason.LENGTH:
                # the context filled up before the choice was complete
                raise PromptTooLongError.for_prompt(len(prompt_tokens), self.context_length)
            if finish is not FinishReason.STOP_SEQUENCE:
                finish = yield from out.flush(finish)
            yield from out.held.finish()
        except GeneratorExit:
            finish = FinishReason.CANCELLED
            raise
        except RuntimeError as exc:  # llama_decode failed: out of KV cache or GPU memory
            raise ModelError(f"{self.manifest.name}: generation failed: {exc}") from exc
        finally:
            tokens.close()
            stats.finish_reason = finish
            stats.total_s = time.perf_counter() - started

    def _sample(self, prompt_tokens: list[int], params: SamplingParams, grammar: Any) -> Any:
        """llama.cpp's sampling loop over the prompt (token ids, lazily)."""
        llm = self._llm
        llm.set_seed(params.seed if params.seed is not None else random.getrandbits(32))
        return llm.generate(
            prompt_tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=0.0,
            typical_p=1.0,
            temp=params.temperature,
            repeat_penalty=1.0,
            reset=True,
            grammar=grammar,
        )

    def _tokens(
        self, tokens: Any, budget: int, out: _Output, started: float
    ) -> Generator[Token, None, FinishReason]:
        """The answer's tokens, each with its signals; how the answer ended."""
        lib, signals, stats = self._lib, self._signals, out.stats
        ctx, n_vocab, vocab = self._llm._ctx.ctx, self._n_vocab, self._vocab
        for token_id in tokens:
            if stats.time_to_first_token_s is None:
                stats.time_to_first_token_s = time.perf_counter() - started
            token_signals = None
            if signals is not None:
                signals_started = time.perf_counter()
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
                token_signals = signals(logits, token_id)
                stats.signals_s += time.perf_counter() - signals_started
            if lib.llama_vocab_is_eog(vocab, token_id):
                stats.eog_signals = token_signals
                return FinishReason.STOP
            stats.completion_tokens += 1
            hit = yield from out.feed(token_id, token_signals, self._piece(token_id))
            if hit is not None:
                return FinishReason.STOP_SEQUENCE
            if stats.completion_tokens >= budget:
                return FinishReason.LENGTH
        return FinishReason.LENGTH


@dataclass
class _Output:
    """Text on its way out: UTF-8 completion, stop matching (or a choice held whole), and
    tokens held until their text is released."""

    matcher: StopMatcher | ChoiceHolder
    utf8: Utf8Stream
    held: _HeldTokens
    stats: GenerationStats

    def feed(
        self, token_id: int, signals: TokenSignals | None, piece: bytes
    ) -> Generator[Token, None, str | None]:
        text = self.utf8.feed(piece)
        self.held.add(token_id, signals, len(text))
        released, hit = self.matcher.feed(text)
        yield from self.held.release(released)
        if hit is not None:
            self.stats.stop_sequence = hit
        return hit

    def flush(self, finish: FinishReason) -> Generator[Token, None, FinishReason]:
        """The text held at the end; a stop sequence may still complete in it."""
        tail = self.utf8.flush()
        self.held.extend_last(len(tail))
        released, hit = self.matcher.feed(tail, final=True)
        yield from self.held.release(released)
        if hit is not None:
            self.stats.stop_sequence = hit
            return FinishReason.STOP_SEQUENCE
        return finish


class _HeldTokens:
    """Holds tokens back until the stop matcher has released their text.

    A token is yielded once all of its text is released; a token that only
    produced (part of) a stop sequence is never yielded, so its signals do not
    count toward the answer's confidence.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[int, TokenSignals | None, int]] = deque()
        self._produced = 0  # characters decoded so far
        self._released = 0  # characters the matcher let through
        self._assigned = 0  # characters handed out with tokens
        self._text = ""  # released, not yet handed out

    def add(self, token_id: int, signals: TokenSignals | None, chars: int) -> None:
        self._produced += chars
        self._pending.append((token_id, signals, self._produced))

    def extend_last(self, chars: int) -> None:
        """Characters that appeared without a new token (a flushed partial character)."""
        if chars and self._pending:
            token_id, signals, end = self._pending.pop()
            self._pending.append((token_id, signals, end + chars))
        self._produced += chars

    def release(self, text: str) -> Iterator[Token]:
        self._released += len(text)
        self._text += text
        while self._pending and self._pending[0][2] <= self._released:
            token_id, signals, end = self._pending.popleft()
            size = end - self._assigned
            yield Token(token_id, self._text[:size], signals)
            self._text, self._assigned = self._text[size:], end

    def finish(self) -> Iterator[Token]:
        """The answer ended: a token straddling its end keeps its part; the rest go."""
        if self._pending and self._assigned < self._released:
            token_id, signals, _ = self._pending.popleft()
            yield Token(token_id, self._text, signals)
        elif self._text:
            yield Token(None, self._text, None)
        self._pending.clear()
        self._text = ""


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

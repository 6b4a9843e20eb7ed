"""llama.cpp's token loop for one answer: keep the whole chunks of the prompt the context
already holds (:mod:`.llama_reuse`), sample, read each token's signals from the logits row
the sampler just used (a zero-copy view, no ``logits_all``), complete UTF-8, match stop
sequences (or hold a choices answer until it is whole), and hand out tokens only once their
text is released."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ModelError, PromptTooLongError
from .choices import ChoiceHolder
from .llama_adapters import Adapters
from .llama_reuse import PromptChunks
from .llama_vocab import LlamaVocab
from .signals import SignalComputer
from .text import StopMatcher, Utf8Stream
from .types import FinishReason, GenerationStats, SamplingParams, Token, TokenSignals

__all__ = ["Decoder"]


class Decoder:
    """The token loop of one loaded model (see the module docstring)."""

    def __init__(
        self,
        lib: Any,
        llm: Any,
        vocab: LlamaVocab,
        signals: SignalComputer | None,
        *,
        name: str,
        context_length: int,
    ) -> None:
        self._lib, self._llm, self._vocab, self._signals = lib, llm, vocab, signals
        self._n_vocab = vocab.size
        self._chunks = PromptChunks(int(llm.n_batch))
        self.adapters = Adapters(lib, llm, name)
        self.name, self.context_length = name, context_length

    def decode(
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
        out = _Output.for_answer(params, stops, grammar is not None, stats, self.name)
        finish = FinishReason.LENGTH
        started = time.perf_counter()
        if self.adapters.apply(params.adapters):
            self._llm.reset()  # its cached prompt was evaluated with other weights
        stats.cached_tokens = self._chunks.keep(self._llm, prompt_tokens)
        tokens = start_sampling(self._llm, prompt_tokens, params, grammar)
        try:
            finish = yield from _token_loop(self, tokens, budget, out, started)
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
            raise ModelError(f"{self.name}: generation failed: {exc}") from exc
        finally:
            tokens.close()
            stats.finish_reason = finish
            stats.total_s = time.perf_counter() - started


def _token_loop(
    decoder: Decoder, tokens: Any, budget: int, out: _Output, started: float
) -> Generator[Token, None, FinishReason]:
    """The answer's tokens, each with its signals; how the answer ended."""
    lib, signals, stats = decoder._lib, decoder._signals, out.stats
    ctx, n_vocab, vocab = decoder._llm._ctx.ctx, decoder._n_vocab, decoder._vocab.handle
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
        hit = yield from out.feed(token_id, token_signals, decoder._vocab.piece(token_id))
        if hit is not None:
            return FinishReason.STOP_SEQUENCE
        if stats.completion_tokens >= budget:
            return FinishReason.LENGTH
    return FinishReason.LENGTH


def start_sampling(llm: Any, prompt_tokens: list[int], params: SamplingParams, grammar: Any) -> Any:
    """llama.cpp's sampling loop over the prompt (token ids, lazily), in a context already
    cut to what the prompt keeps of it (:mod:`.llama_reuse`)."""
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


@dataclass
class _Output:
    """Text on its way out: UTF-8 completion, stop matching (or a choice held whole), and
    tokens held until their text is released."""

    matcher: StopMatcher | ChoiceHolder
    utf8: Utf8Stream
    held: _HeldTokens
    stats: GenerationStats

    @classmethod
    def for_answer(
        cls,
        params: SamplingParams,
        stops: Sequence[str],
        choosing: bool,
        stats: GenerationStats,
        name: str,
    ) -> _Output:
        """Stop matching, or (``choosing``) a choice held until it is whole."""
        matcher: StopMatcher | ChoiceHolder = (
            ChoiceHolder(params.choices, name) if choosing else StopMatcher(stops)
        )
        return cls(matcher, Utf8Stream(), _HeldTokens(), stats)

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

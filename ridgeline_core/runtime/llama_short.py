"""Short answers to few-shot prompts, several at once, from kept prefix states.

A confidence probe is a fixed few-shot frame (the *prefix*) followed by a question (the
*suffix*), answered greedily until the first newline. Evaluating the frame for every
request is most of a probe's cost, so a second llama.cpp context on the same weights
keeps one sequence per frame: its frame stays in that sequence's KV cells, and a request
evaluates only the tokens after it. All the sequences' new tokens go into one batch, and
each greedy step decodes one token of every sequence still answering. Sampled answers to
the same prompt (self-consistency) start from a copy of its evaluated cells, so they cost
only their own tokens, decoded in the same steps.

The sequences live in separate KV streams (``kv_unified`` off), so a sequence attends only
to its own cells and its numbers do not depend on what the others hold: the answers are
those of one prompt evaluated alone from position 0 (``tests/test_short_answers.py``
checks kept against fresh and batched against one at a time, token for token).

The context's memory is ``sequences x cells`` KV cells (for SmolLM2-135M, five sequences
of 512 cells are about 60 MB); a prompt longer than a sequence's cells raises
PromptTooLongError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelError, PromptTooLongError
from .llama_vocab import LlamaVocab
from .signals import SignalComputer
from .types import ShortGeneration, TokenSignals

__all__ = ["ShortAnswers", "common_prefix"]

SEQUENCE_CELLS = 512  # KV cells per sequence: a frame, a question and a short answer
MAX_FRAMES = 8  # frames kept at once; more start the assignment over
MAX_SAMPLES = 8


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class _Sequence:
    """One KV stream: the prefix tokens its cells hold, to be kept for the next prompt."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.prefix: list[int] = []  # the kept prefix tokens now in the cells
        self.prompt: list[int] = []  # this request's prompt
        self.position = 0  # the next token's position
        self.row = -1  # the batch row holding this sequence's last logits
        self.tokens: list[int] = []
        self.signals: list[TokenSignals] = []
        self.pieces: list[bytes] = []
        self.kept = 0
        self.sampler: _Sampler | None = None  # None: greedy

    def start(self, mem: Any, lib: Any, prefix: list[int], prompt: list[int]) -> list[int]:
        """Cut the cells to the prefix ``prompt`` shares with what they hold; the prompt
        tokens still to evaluate."""
        own = common_prefix(prefix, prompt)  # the part of the prompt that is the frame
        keep = min(common_prefix(self.prefix, prompt[:own]), len(prompt) - 1)
        lib.llama_memory_seq_rm(mem, self.seq_id, keep, -1)
        self.prefix = prompt[:own]  # the cells will hold all of it after this batch
        self.prompt, self.kept, self.position = prompt, keep, len(prompt)
        self.tokens, self.signals, self.pieces = [], [], []
        return prompt[keep:]

    def fork(self, mem: Any, lib: Any, source: _Sequence) -> None:
        """Continue from ``source``'s evaluated prompt (a copy of its cells)."""
        lib.llama_memory_seq_rm(mem, self.seq_id, -1, -1)
        lib.llama_memory_seq_cp(mem, source.seq_id, self.seq_id, -1, -1)
        self.prefix = []  # the cells hold another prompt's question from now on
        self.prompt, self.kept, self.position = source.prompt, source.kept, source.position
        self.row, self.tokens, self.signals, self.pieces = source.row, [], [], []

    def forget(self, mem: Any, lib: Any) -> None:
        lib.llama_memory_seq_rm(mem, self.seq_id, 0, -1)
        self.prefix = []

    def answer(self) -> ShortGeneration:
        text = b"".join(self.pieces).decode("utf-8", errors="ignore").strip()
        return ShortGeneration(
            text, tuple(self.tokens), tuple(self.signals), len(self.prompt), self.kept
        )


class _Sampler:
    """Sampling at ``temperature`` from a seeded generator: the same seed, the same text."""

    def __init__(self, temperature: float, seed: int, index: int) -> None:
        self._temperature = temperature
        self._rng = np.random.default_rng([seed, index])

    def pick(self, logits: Any) -> int:
        weights = (logits.astype(np.float64) - float(logits.max())) / self._temperature
        np.exp(weights, out=weights)
        cumulative = np.cumsum(weights)
        drawn = int(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], "right"))
        return min(drawn, cumulative.size - 1)


class _Batch:
    """A reusable ``llama_batch`` of single-sequence tokens."""

    def __init__(self, lib: Any, size: int, sequences: int) -> None:
        self._lib = lib
        self.handle = lib.llama_batch_init(size, 0, sequences)

    def clear(self) -> None:
        self.handle.n_tokens = 0

    def add(self, token: int, position: int, seq_id: int, logits: bool) -> int:
        b, i = self.handle, self.handle.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i] = token, position, 1
        b.seq_id[i][0], b.logits[i] = seq_id, logits
        b.n_tokens = i + 1
        return int(i)

    def free(self) -> None:
        self._lib.llama_batch_free(self.handle)


class _Frames:
    """Which sequence keeps which frame (the same one every call), and the samples'."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, ...], int] = {}  # a frame's tokens -> its sequence

    def assign(self, prefixes: list[list[int]], samples: int) -> tuple[list[int], list[int]]:
        """The frames' sequences, and the samples' after every frame's."""
        if len(prefixes) > MAX_FRAMES:
            raise ValueError(f"at most {MAX_FRAMES} prompts at once")
        if not 0 <= samples <= MAX_SAMPLES or (samples and not prefixes):
            raise ValueError(f"samples must be 0 to {MAX_SAMPLES}, of a first prompt")
        keys = [tuple(prefix) for prefix in prefixes]
        if len(set(keys)) < len(keys):
            raise ValueError("each prompt needs its own prefix (a frame keeps one sequence)")
        if len(self._ids) + len(set(keys) - set(self._ids)) > MAX_FRAMES:
            self._ids.clear()  # start over: what a sequence holds is still checked
        for key in keys:  # against each prompt (_Sequence.start)
            self._ids.setdefault(key, len(self._ids))
        start = len(self._ids)  # every frame's sequence comes before it
        return [self._ids[key] for key in keys], list(range(start, start + samples))


class _ProbeContext:
    """The second context: its KV streams (one a sequence), its batch, its decode."""

    def __init__(self, lib: Any, llm: Any, vocab: LlamaVocab, name: str) -> None:
        self.lib, self._llm, self.vocab, self.name = lib, llm, vocab, name
        self.signals = SignalComputer(vocab.size)
        self.ctx: Any = None
        self.batch: _Batch | None = None
        self.sequences: list[_Sequence] = []

    def open(self, sequences: int, threads: tuple[int, int]) -> None:
        """At least ``sequences`` sequences (a new context keeps no frame: each is
        evaluated again, once), computing with ``threads``."""
        if self.ctx is None or sequences > len(self.sequences):
            self.close()
            self.ctx = _probe_context(self.lib, self._llm, sequences)
            if self.ctx is None:
                raise ModelError(f"{self.name}: llama.cpp could not make the probe context")
            self.batch = _Batch(self.lib, sequences * SEQUENCE_CELLS, sequences)
            self.sequences = [_Sequence(i) for i in range(sequences)]
        self.lib.llama_set_n_threads(self.ctx, *threads)

    @property
    def memory(self) -> Any:
        return self.lib.llama_get_memory(self.ctx)

    def forget(self) -> None:
        if self.ctx is not None:
            for sequence in self.sequences:
                sequence.forget(self.memory, self.lib)

    def decode(self) -> None:
        assert self.batch is not None
        status = self.lib.llama_decode(self.ctx, self.batch.handle)
        if status != 0:
            raise ModelError(f"{self.name}: probe evaluation failed (llama_decode {status})")

    def close(self) -> None:
        if self.batch is not None:
            self.batch.free()
            self.batch = None
        if self.ctx is not None:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        self.sequences = []


class ShortAnswers:
    """Short answers from the probe context of one loaded model (see the module
    docstring), created on first use and made again when a call needs more sequences."""

    def __init__(self, lib: Any, llm: Any, vocab: LlamaVocab, name: str) -> None:
        self._context = _ProbeContext(lib, llm, vocab, name)
        self._frames = _Frames()

    def answer(
        self,
        prompts: Sequence[tuple[str, str]],
        *,
        max_tokens: int,
        threads: tuple[int, int],
        together: bool = True,
        samples: int = 0,
        temperature: float = 0.8,
        seed: int = 0,
    ) -> list[ShortGeneration]:
        """Greedy answers to ``prefix + suffix`` for each (prefix, suffix), each ending
        at its first newline, end of text or ``max_tokens``; then ``samples`` answers to
        the first prompt sampled at ``temperature`` (from ``seed``), which continue from
        its evaluated prompt. ``together``: all in one batch (else each prompt alone, for
        comparison). Prompts are plain text: a control token's text in them stays text."""
        wanted = [self._tokens(prefix, prefix + suffix) for prefix, suffix in prompts]
        frames, forks = self._frames.assign([prefix for prefix, _ in wanted], samples)
        context = self._context
        context.open(max(frames + forks, default=-1) + 1, threads)
        sequences = context.sequences
        for index, sequence in enumerate(sequences):
            sampled = sequence.seq_id in forks
            sequence.sampler = _Sampler(temperature, seed, forks.index(index)) if sampled else None
        groups = [frames] if together else [[frame] for frame in frames]
        for group in groups:
            chosen = [sequences[f] for f in group]
            sampling = [sequences[f] for f in forks] if frames[0] in group else []
            _generate(
                context, chosen, [wanted[frames.index(f)] for f in group], max_tokens, sampling
            )
        return [sequences[i].answer() for i in frames + forks]

    def forget(self) -> None:
        """Drop the kept prefixes: the next call evaluates every prompt from scratch."""
        self._context.forget()

    def close(self) -> None:
        self._context.close()

    def _tokens(self, prefix: str, text: str) -> tuple[list[int], list[int]]:
        vocab = self._context.vocab
        prefix_tokens = vocab.tokenize(prefix, add_special=True, control=False)
        prompt = vocab.tokenize(text, add_special=True, control=False)
        if len(prompt) >= SEQUENCE_CELLS:
            raise PromptTooLongError.for_prompt(len(prompt), SEQUENCE_CELLS)
        return prefix_tokens, prompt


def _generate(
    context: _ProbeContext,
    sequences: list[_Sequence],
    prompts: list[tuple[list[int], list[int]]],
    max_tokens: int,
    forks: list[_Sequence],
) -> None:
    """Evaluate the prompts past what each sequence keeps in one batch, then step every
    sequence still answering (``forks`` continue the first's prompt) one token a decode."""
    batch, mem = context.batch, context.memory
    assert batch is not None
    batch.clear()
    for sequence, (prefix, prompt) in zip(sequences, prompts, strict=True):
        new = sequence.start(mem, context.lib, prefix, prompt)
        first = len(prompt) - len(new)
        for offset, token in enumerate(new):
            last = offset == len(new) - 1
            row = batch.add(token, first + offset, sequence.seq_id, last)
            if last:
                sequence.row = row
    context.decode()
    for fork in forks:  # the first prompt's samples: from its evaluated prompt
        fork.fork(mem, context.lib, sequences[0])
    active = sequences + forks
    while active:
        active = [s for s in active if _next_token(context, s, max_tokens)]
        if active:
            batch.clear()
            for s in active:
                s.row = batch.add(s.tokens[-1], s.position, s.seq_id, True)
                s.position += 1
            context.decode()


def _next_token(context: _ProbeContext, sequence: _Sequence, max_tokens: int) -> bool:
    """Take the sequence's next token (greedy, or sampled); whether it goes on."""
    lib, vocab = context.lib, context.vocab
    row = lib.llama_get_logits_ith(context.ctx, sequence.row)
    logits = np.ctypeslib.as_array(row, shape=(vocab.size,))
    token = int(logits.argmax()) if sequence.sampler is None else sequence.sampler.pick(logits)
    if lib.llama_vocab_is_eog(vocab.handle, token):
        return False
    text, newline, _ = vocab.piece(token).partition(b"\n")
    if text or not newline:  # a token that is only the newline is not part of it
        sequence.tokens.append(token)
        sequence.signals.append(context.signals(logits, token))
        sequence.pieces.append(text)
    return not newline and len(sequence.tokens) < max_tokens


def _probe_context(lib: Any, llm: Any, sequences: int) -> Any:
    """A context on ``llm``'s weights with a KV stream of SEQUENCE_CELLS per sequence."""
    params = lib.llama_context_default_params()
    loaded = llm.context_params
    params.n_ctx = params.n_batch = sequences * SEQUENCE_CELLS
    params.n_ubatch = min(SEQUENCE_CELLS, int(loaded.n_ubatch))
    params.n_seq_max, params.kv_unified = sequences, False
    params.flash_attn_type, params.no_perf = loaded.flash_attn_type, True
    params.type_k, params.type_v = loaded.type_k, loaded.type_v
    return lib.llama_init_from_model(llm.model, params)

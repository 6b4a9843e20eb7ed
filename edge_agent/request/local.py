"""One local generation to its end, or to an early abort, with its per-token signals."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass

from ridgeline_core.cancel import CancelToken
from ridgeline_core.runtime import (
    ChatMessage,
    GenerationStats,
    Runtime,
    SamplingParams,
    TokenSignals,
)

from ..confidence.features import Evidence, RetrievalEvidence
from ..decision import AbortInfo, ConfidenceInfo
from ..routing.route import Aborted, Judged

__all__ = ["LocalResult", "LocalRun", "generate_local", "run_local"]

AbortCheck = Callable[[list[TokenSignals]], bool]


@dataclass(frozen=True)
class LocalRun:
    text: str
    signals: list[TokenSignals]  # one per answer token
    stats: GenerationStats
    aborted_at: int | None = None  # answer tokens generated when should_abort said stop
    pieces: list[str] = dataclasses.field(default_factory=list)  # text of each token

    def evidence(self, prompt: str, retrieval: RetrievalEvidence | None = None) -> Evidence:
        """What the confidence features read (probes not yet run)."""
        return Evidence(
            prompt, tuple(self.pieces), tuple(self.signals), self.stats.eog_signals,
            retrieval=retrieval,
        )  # fmt: skip


def generate_local(
    runtime: Runtime,
    messages: list[ChatMessage],
    params: SamplingParams,
    should_abort: AbortCheck | None = None,
    cancel: CancelToken | None = None,
) -> Generator[str, None, LocalRun]:
    """Yield the answer's text as it becomes final; return the whole run.

    Stops at the end, or when ``should_abort(signals so far)`` says so. A cancelled
    ``cancel`` stops the generation at the next token (RequestCancelledError); closing the
    generator stops it too, and frees the model."""
    parts: list[str] = []
    signals: list[TokenSignals] = []
    pieces: list[str] = []
    aborted_at = None
    with runtime.generate(messages, params) as stream:
        for token in stream:
            if cancel is not None:
                cancel.check()
            if token.signals is not None:
                signals.append(token.signals)
                pieces.append(token.text)
            elif pieces:  # text held back and released at the end belongs to the last token
                pieces[-1] += token.text
            if token.text:
                parts.append(token.text)
                yield token.text
            if should_abort is not None and token.signals is not None and should_abort(signals):
                aborted_at = len(signals)
                break
    return LocalRun("".join(parts), signals, stream.stats, aborted_at, pieces)


def run_local(
    runtime: Runtime,
    messages: list[ChatMessage],
    params: SamplingParams,
    on_text: Callable[[str], None] | None = None,
    should_abort: AbortCheck | None = None,
    cancel: CancelToken | None = None,
) -> LocalRun:
    """:func:`generate_local` to its end, handing each piece of text to ``on_text``."""
    steps = generate_local(runtime, messages, params, should_abort, cancel)
    while True:
        try:
            text = next(steps)
        except StopIteration as done:
            run: LocalRun = done.value
            return run
        if on_text is not None:
            on_text(text)


@dataclass(frozen=True)
class LocalResult:
    """One local generation's outcome as a request sees it: the run, its confidence, and
    how that confidence was computed."""

    run: LocalRun
    confidence: float
    load_s: float  # loading the model, or waiting for a free copy
    abort: AbortInfo | None
    info: ConfidenceInfo

    @property
    def evidence(self) -> Aborted | Judged:
        """What :func:`~edge_agent.routing.route.route` weighs."""
        if self.abort is not None:
            return Aborted(self.abort.at_token, self.abort.running_confidence, self.abort.limit)
        return Judged(self.confidence)

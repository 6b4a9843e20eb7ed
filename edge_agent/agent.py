"""The edge agent in-process: answer a prompt on this device and say how sure it is."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Literal

from ridgeline_core.errors import EmptyPromptError
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime import (
    ChatMessage,
    GenerationStats,
    Runtime,
    RuntimePool,
    SamplingParams,
    TokenSignals,
)
from ridgeline_core.store import ManifestCatalog, ModelStore

from .confidence import get_scorer
from .settings import EdgeSettings

__all__ = [
    "Answer",
    "AnswerTimings",
    "EdgeAgent",
    "LocalRun",
    "SignalSummary",
    "chat_messages",
    "run_local",
]


@dataclass(frozen=True)
class AnswerTimings:
    load_s: float  # verifying and loading the model; 0 when it was already loaded
    time_to_first_token_s: float | None
    total_s: float  # generation, from request to last token
    tokens_per_s: float | None  # decode speed after the first token
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class SignalSummary:
    tokens: int
    min_prob: float | None
    mean_prob: float | None
    mean_entropy: float | None
    mean_margin: float | None

    @classmethod
    def of(cls, signals: list[TokenSignals]) -> SignalSummary:
        if not signals:
            return cls(0, None, None, None, None)
        n = len(signals)
        return cls(
            tokens=n,
            min_prob=min(s.prob for s in signals),
            mean_prob=sum(s.prob for s in signals) / n,
            mean_entropy=sum(s.entropy for s in signals) / n,
            mean_margin=sum(s.margin for s in signals) / n,
        )


@dataclass(frozen=True)
class Answer:
    text: str
    source: Literal["local"]
    confidence: float
    scorer: str
    model: str
    finish_reason: str
    timings: AnswerTimings
    signals: SignalSummary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def chat_messages(prompt: str, system_prompt: str | None) -> list[ChatMessage]:
    """The conversation a prompt becomes; without a system prompt the model's manifest
    supplies its own (the runtime adds it)."""
    messages = [ChatMessage("user", prompt)]
    if system_prompt:
        messages.insert(0, ChatMessage("system", system_prompt))
    return messages


@dataclass(frozen=True)
class LocalRun:
    text: str
    signals: list[TokenSignals]  # one per answer token
    stats: GenerationStats


def run_local(
    runtime: Runtime,
    messages: list[ChatMessage],
    params: SamplingParams,
    on_text: Callable[[str], None] | None = None,
) -> LocalRun:
    """Generate to the end, collecting the answer's text and its tokens' signals."""
    parts: list[str] = []
    signals: list[TokenSignals] = []
    with runtime.generate(messages, params) as stream:
        for token in stream:
            if token.signals is not None:
                signals.append(token.signals)
            if token.text:
                parts.append(token.text)
                if on_text is not None:
                    on_text(token.text)
    return LocalRun("".join(parts), signals, stream.stats)


class EdgeAgent:
    """Answers prompts with the local model. Loads each model once, on first use."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        catalog: ManifestCatalog | None = None,
        store: ModelStore | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog or settings.models.catalog()
        self.store = store or settings.models.store()
        self._pool = RuntimePool(self.catalog, self.store, settings.runtime.load_options())
        self._scorer_name = settings.confidence.scorer
        self._scorer = get_scorer(self._scorer_name)

    def ask(
        self,
        prompt: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        on_text: Callable[[str], None] | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> Answer:
        """Answer ``prompt`` locally; ``on_text`` receives the answer as it streams."""
        if not prompt.strip():
            raise EmptyPromptError("prompt is empty")
        name = model or self.settings.models.default
        started = time.perf_counter()
        runtime = self._pool.get(name, progress)
        load_s = time.perf_counter() - started

        generation = self.settings.generation
        params = generation.sampling()
        if max_tokens is not None:
            params = dataclasses.replace(params, max_tokens=max_tokens)
        run = run_local(runtime, chat_messages(prompt, generation.system_prompt), params, on_text)
        stats = run.stats
        signals = run.signals
        return Answer(
            text=run.text,
            source="local",
            confidence=self._scorer(signals),
            scorer=self._scorer_name,
            model=name,
            finish_reason=stats.finish_reason.value if stats.finish_reason else "unknown",
            timings=AnswerTimings(
                load_s=load_s,
                time_to_first_token_s=stats.time_to_first_token_s,
                total_s=stats.total_s,
                tokens_per_s=stats.tokens_per_s,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
            ),
            signals=SignalSummary.of(signals),
        )

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> EdgeAgent:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""The answer a request ends with: its text, where it came from, and its decision record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ridgeline_core.runtime import TokenSignals

from ..decision import Decision, Path, known_fields, plain

__all__ = ["Answer", "AnswerTimings", "SignalSummary"]


@dataclass(frozen=True)
class AnswerTimings:
    load_s: float  # loading the model, or waiting for a free copy; ~0 when one was ready
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
    source: Path  # the path that produced the text (see edge_agent.decision)
    confidence: float | None  # of the local answer; None when the local model did not run
    threshold: float  # τ this request was held to
    scorer: str
    model: str  # the model whose text this is (a broker model for cloud answers)
    finish_reason: str
    timings: AnswerTimings | None  # local generation, when it ran
    signals: SignalSummary | None
    decision: Decision
    # the passages the answering model read: n, collection, source, chunk, heading, score,
    # and whether the text cites it ([n])
    citations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        """The answer :meth:`to_dict` wrote (what a daemon sends an ``EdgeClient``)."""
        fields = known_fields(cls, data)
        if fields.get("timings") is not None:
            fields["timings"] = AnswerTimings(**known_fields(AnswerTimings, fields["timings"]))
        if fields.get("signals") is not None:
            fields["signals"] = SignalSummary(**known_fields(SignalSummary, fields["signals"]))
        fields["decision"] = Decision.from_dict(fields["decision"])
        return cls(**fields)

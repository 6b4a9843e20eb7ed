"""What a request learned on its way, and the answer with its decision record built from it.

The pipeline notes each stage here as it runs (the threshold, the cache lookup, the
pre-route's guess, the local run, the broker call); :meth:`Record.answer` turns the last
route into the :class:`~edge_agent.request.answer.Answer` and its
:class:`~edge_agent.decision.Decision`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..decision import (
    AbortInfo,
    BrokerInfo,
    CacheInfo,
    ConfidenceInfo,
    Decision,
    Path,
    PreRouteInfo,
    StageTimings,
)
from ..link.escalation import CloudAnswer
from ..routing.policy import Threshold
from ..routing.preroute import Prediction
from ..routing.route import Route
from ..telemetry import Telemetry
from .answer import Answer, AnswerTimings, SignalSummary
from .local import LocalResult

if TYPE_CHECKING:
    from ..knowledge.library.outbound import Outbound
    from .knowledge_stage import KnowledgeUse

__all__ = ["Record", "cached_answer", "cloud_answer", "local_answer"]


@dataclass
class Record:
    """The request's stages so far (filled in as they run)."""

    snapshot: Telemetry
    threshold: Threshold
    tau: float
    mode: str
    model: str
    scorer: str  # the raw scorer's name, for answers with no local run
    started: float = field(default_factory=time.perf_counter)
    decide_ms: float = 0.0
    gate: str | None = None  # why escalation was impossible, when it was
    cache_ms: float | None = None
    cache: CacheInfo | None = None
    preroute_ms: float | None = None
    prediction: Prediction | None = None
    skipped_local: bool = False
    local: LocalResult | None = None
    local_ms: float = 0.0
    first_abort: AbortInfo | None = None  # kept when a later full run replaces it
    broker_ms: float | None = None
    broker: BrokerInfo | None = None
    knowledge_ms: float | None = None
    knowledge: KnowledgeUse | None = None
    outbound: Outbound | None = None  # what an escalation sent under the privacy setting
    adapter: str | None = None  # the LoRA adapter the local model answered with
    threads: int | None = None  # the threads the local model generated with

    def decision(self, path: Path, reason: str) -> Decision:
        local, prediction, th = self.local, self.prediction, self.threshold
        return Decision(
            path=path,
            mode=self.mode,
            reason=reason,
            confidence=None if local is None else local.confidence,
            confidence_info=None if local is None else local.info,
            threshold=self.tau,
            threshold_raw=th.raw,
            threshold_reason=th.reason(),
            threshold_terms=[
                {"name": t.name, "side": t.side, "delta": t.delta, "why": t.why} for t in th.terms
            ],
            telemetry=self.snapshot.values(),
            telemetry_sources=list(self.snapshot.sources),
            gate=self.gate,
            preroute=None if prediction is None else _preroute(prediction, self.skipped_local),
            aborted=self.first_abort or (None if local is None else local.abort),
            broker=self.broker,
            cache=self.cache,
            local_threads=self.threads,
            knowledge=(
                None if self.knowledge is None else self.knowledge.info(self.outbound, self.adapter)
            ),
            timings=StageTimings(
                cache_ms=self.cache_ms,
                decide_ms=self.decide_ms,
                preroute_ms=self.preroute_ms,
                local_ms=self.local_ms if local is not None else None,
                broker_ms=self.broker_ms,
                knowledge_ms=self.knowledge_ms,
                total_ms=(time.perf_counter() - self.started) * 1000,
            ),
        )


def local_answer(record: Record, route: Route) -> Answer:
    """The local run's answer, on ``route``'s path."""
    local = record.local
    assert local is not None, "a local answer needs a local run"
    stats = local.run.stats
    path = route.path or "local"
    return Answer(
        text=local.run.text,
        source=path,
        confidence=local.confidence,
        threshold=record.tau,
        scorer=_scorer_label(local.info),
        model=record.model,
        finish_reason=stats.finish_reason.value if stats.finish_reason else "unknown",
        timings=_timings(local),
        signals=SignalSummary.of(local.run.signals),
        decision=record.decision(path, route.reason),
        citations=[] if record.knowledge is None else record.knowledge.citations(local.run.text),
    )


def cloud_answer(record: Record, route: Route, cloud: CloudAnswer) -> Answer:
    """The broker's answer; the local run's confidence and timings when it ran."""
    local = record.local
    path = route.path or "cloud"
    return Answer(
        text=cloud.text,
        source=path,
        confidence=None if local is None else local.confidence,
        threshold=record.tau,
        scorer=record.scorer if local is None else _scorer_label(local.info),
        model=cloud.model,
        finish_reason=cloud.finish_reason,
        timings=None if local is None else _timings(local),
        signals=None if local is None else SignalSummary.of(local.run.signals),
        decision=record.decision(path, route.reason),
        citations=_broker_citations(record, cloud.text),
    )


def _broker_citations(record: Record, text: str) -> list[dict[str, object]]:
    """The passages the broker read: none when the privacy setting kept them back."""
    knowledge, sent = record.knowledge, record.outbound
    if knowledge is None or sent is None or sent.withheld:
        return []
    return knowledge.citations(text)


def cached_answer(record: Record, reason: str, text: str, model: str) -> Answer:
    """An answer from the semantic cache: neither model ran."""
    return Answer(
        text=text,
        source="cache",
        confidence=None,
        threshold=record.tau,
        scorer="cache",
        model=model,
        finish_reason="stop",
        timings=None,
        signals=None,
        decision=record.decision("cache", reason),
    )


def _preroute(prediction: Prediction, skipped_local: bool) -> PreRouteInfo:
    memory = prediction.memory
    if memory is None:
        return PreRouteInfo(prediction.confidence, list(prediction.hints), skipped_local)
    return PreRouteInfo(
        prediction.confidence,
        list(prediction.hints),
        skipped_local,
        rules=prediction.rules,
        memory=memory.probability,
        memory_support=memory.support,
        memory_neighbours=memory.neighbours,
    )


def _scorer_label(info: ConfidenceInfo) -> str:
    if not info.calibrated:
        return info.method
    cheap = info.variant is not None and info.variant.startswith("cheap")
    return f"calibrated:{info.method}" + ("/cheap" if cheap else "")


def _timings(local: LocalResult) -> AnswerTimings:
    stats = local.run.stats
    return AnswerTimings(
        load_s=local.load_s,
        time_to_first_token_s=stats.time_to_first_token_s,
        total_s=stats.total_s,
        tokens_per_s=stats.tokens_per_s,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
    )

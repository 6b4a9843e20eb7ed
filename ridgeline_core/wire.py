"""The broker protocol (``ridgeline.v1.Broker``) to and from domain types, in one place.

Both sides convert here: the client builds a ``GenerateRequest`` from chat messages,
sampling parameters and the local draft, and reads the stream back as :class:`BrokerDelta`
and :class:`BrokerResult`; the broker (``cloud_broker.wire``) reads requests and writes
events with the same role and finish-reason tables. Domain code never holds a protobuf
message.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ridgeline.v1 import broker_pb2

from .runtime.types import ChatMessage, FinishReason, SamplingParams

__all__ = [
    "FINISH_TO_PB",
    "ROLES_FROM_PB",
    "ROLES_TO_PB",
    "BrokerDelta",
    "BrokerResult",
    "DraftVerdict",
    "LocalDraft",
    "MemberResult",
    "StrategyChoice",
    "event_from_pb",
    "generate_request",
    "params_to_pb",
]

ROLES_TO_PB = {
    "system": broker_pb2.ROLE_SYSTEM,
    "user": broker_pb2.ROLE_USER,
    "assistant": broker_pb2.ROLE_ASSISTANT,
}
ROLES_FROM_PB = {code: name for name, code in ROLES_TO_PB.items()}
FINISH_TO_PB = {
    FinishReason.STOP: broker_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: broker_pb2.FINISH_REASON_LENGTH,
    FinishReason.STOP_SEQUENCE: broker_pb2.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.CANCELLED: broker_pb2.FINISH_REASON_CANCELLED,
}
_FINISH_FROM_PB = {code: reason.value for reason, code in FINISH_TO_PB.items()}


@dataclass(frozen=True)
class LocalDraft:
    """The device's own answer, sent along with an escalation."""

    text: str
    confidence: float
    model: str
    completion_tokens: int


@dataclass(frozen=True)
class StrategyChoice:
    """A strategy configured on the broker, asked for by name, with the request's knobs."""

    name: str
    task: str = ""
    willingness_to_pay: float | None = None


@dataclass(frozen=True)
class MemberResult:
    """One model's part in a strategy's answer."""

    model: str
    role: str  # answer, sample, verifier, aggregator, draft
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    score: float | None = None
    vote: str = ""
    accepted: bool = False
    note: str = ""


@dataclass(frozen=True)
class DraftVerdict:
    """The broker's judgement of the device's draft."""

    accepted: bool
    score: float
    verifier: str


@dataclass(frozen=True)
class BrokerDelta:
    """More of the broker's answer."""

    text: str
    model: str


@dataclass(frozen=True)
class BrokerResult:
    """The end of a broker answer: how it finished, who answered, what it cost."""

    finish_reason: str  # stop, length, stop_sequence, cancelled or unknown
    answer_model: str
    models_used: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    queue_ms: float
    time_to_first_token_ms: float
    total_ms: float
    members: tuple[MemberResult, ...] = ()
    cost: float = 0.0
    strategy: str = "single"  # single, route, cascade, ensemble
    strategy_name: str = ""
    draft_verdict: DraftVerdict | None = None
    notes: tuple[str, ...] = ()


def params_to_pb(params: SamplingParams) -> broker_pb2.SamplingParams:
    """Every parameter is sent: the broker clamps what it must and says so."""
    pb = broker_pb2.SamplingParams(
        stop=list(params.stop),
        choices=list(params.choices),
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
    )
    if params.top_k:
        pb.top_k = params.top_k
    if params.seed is not None:
        pb.seed = params.seed
    return pb


def generate_request(
    messages: Sequence[ChatMessage],
    params: SamplingParams,
    *,
    model: str | None = None,
    device_id: str = "",
    draft: LocalDraft | None = None,
    request_id: str | None = None,
    strategy: StrategyChoice | None = None,
    max_cost: float | None = None,
) -> broker_pb2.GenerateRequest:
    request = broker_pb2.GenerateRequest(
        request_id=request_id or uuid.uuid4().hex,
        device_id=device_id,
        messages=[
            broker_pb2.ChatMessage(role=ROLES_TO_PB[m.role], content=m.content) for m in messages
        ],
        params=params_to_pb(params),
    )
    if strategy is not None:
        request.strategy.name = strategy.name
        request.strategy.task = strategy.task
        if strategy.willingness_to_pay is not None:
            request.strategy.willingness_to_pay = strategy.willingness_to_pay
    elif model:
        request.model = model
    if max_cost is not None:
        request.max_cost = max_cost
    if draft is not None:
        request.local_draft.CopyFrom(
            broker_pb2.LocalDraft(
                text=draft.text,
                confidence=draft.confidence,
                model=draft.model,
                completion_tokens=draft.completion_tokens,
            )
        )
    return request


def event_from_pb(event: broker_pb2.GenerateResponse) -> BrokerDelta | BrokerResult:
    if event.HasField("delta"):
        return BrokerDelta(event.delta.text, event.delta.model)
    result = event.result
    return BrokerResult(
        finish_reason=_FINISH_FROM_PB.get(result.finish_reason, "unknown"),
        answer_model=result.answer_model,
        models_used=tuple(result.models_used),
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        queue_ms=result.timings.queue_ms,
        time_to_first_token_ms=result.timings.time_to_first_token_ms,
        total_ms=result.timings.total_ms,
        members=tuple(_member(m) for m in result.members),
        cost=result.cost,
        strategy=_KINDS.get(result.strategy, "single"),
        strategy_name=result.strategy_name,
        draft_verdict=_verdict(result),
        notes=tuple(result.notes),
    )


_KINDS = {
    broker_pb2.Strategy.KIND_SINGLE: "single",
    broker_pb2.Strategy.KIND_ROUTE: "route",
    broker_pb2.Strategy.KIND_CASCADE: "cascade",
    broker_pb2.Strategy.KIND_ENSEMBLE: "ensemble",
}


def _member(record: broker_pb2.MemberRecord) -> MemberResult:
    return MemberResult(
        model=record.model,
        role=record.role,
        prompt_tokens=record.usage.prompt_tokens,
        completion_tokens=record.usage.completion_tokens,
        cost=record.cost,
        latency_ms=record.latency_ms,
        score=record.score if record.HasField("score") else None,
        vote=record.vote,
        accepted=record.accepted,
        note=record.note,
    )


def _verdict(result: broker_pb2.GenerateResult) -> DraftVerdict | None:
    if not result.HasField("draft_verdict"):
        return None
    verdict = result.draft_verdict
    return DraftVerdict(verdict.accepted, verdict.score, verdict.verifier)

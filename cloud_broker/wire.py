"""The broker's side of ``ridgeline.v1``: requests in, events out, checked at the boundary.

Every request is checked here before any model work starts: its target, message count and
size, roles, sampling parameters and choices; ``max_tokens`` above ``limits.max_tokens``
is clamped rather than refused, so an edge device built for a bigger broker still gets an
answer. Bytes that do not parse stand in as :class:`Malformed`, so the call can answer
INVALID_ARGUMENT (gRPC itself would answer INTERNAL). The role and finish-reason tables are
the client's (:mod:`ridgeline_core.wire`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from google.protobuf.message import DecodeError

from ridgeline.v1 import broker_pb2
from ridgeline_core import errors
from ridgeline_core.runtime import MAX_STOP_CHARS, MAX_STOPS, ChatMessage, SamplingParams
from ridgeline_core.runtime.choices import check_choices
from ridgeline_core.wire import FINISH_TO_PB, ROLES_FROM_PB, LocalDraft

from .backends import Backend, BackendRequest
from .settings import LimitsSettings
from .strategies import Member, Prices, StrategyOutcome, Target
from .strategy_settings import StrategySettings

__all__ = [
    "KINDS_TO_PB",
    "Malformed",
    "Target",
    "backend_request",
    "delta_to_pb",
    "draft_of",
    "lenient",
    "models_to_pb",
    "result_to_pb",
    "target_of",
]

_MAX_REQUEST_ID = 128
_MAX_SEED = 2**32 - 1
_MAX_NAME = 128
KINDS_TO_PB = {
    "single": broker_pb2.Strategy.KIND_SINGLE,
    "route": broker_pb2.Strategy.KIND_ROUTE,
    "cascade": broker_pb2.Strategy.KIND_CASCADE,
    "ensemble": broker_pb2.Strategy.KIND_ENSEMBLE,
}
_KINDS_FROM_PB = {code: kind for kind, code in KINDS_TO_PB.items()}


class Malformed:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, method: str, exception: Exception) -> None:
        self.method = method
        self.exception = exception

    def error(self) -> errors.InvalidRequestError:
        return errors.InvalidRequestError(f"malformed {self.method} request: {self.exception}")

    def check(self) -> None:
        raise self.error()


def lenient(message: Any, method: str) -> Callable[[bytes], Any]:
    """A request deserializer that yields :class:`Malformed` instead of failing."""

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(method, exc)

    return parse


def target_of(request: broker_pb2.GenerateRequest) -> Target:
    """The request's target, its strategy's knobs and ``max_cost``, checked."""
    max_cost = _non_negative(request, "max_cost") if request.HasField("max_cost") else None
    if request.WhichOneof("target") != "strategy":
        return Target(model=request.model, max_cost=max_cost)
    strategy = request.strategy
    if strategy.kind not in broker_pb2.Strategy.Kind.values():
        raise errors.InvalidRequestError(
            f"strategy.kind {strategy.kind} is not a strategy of this protocol",
            param="strategy.kind",
        )
    for text, field in ((strategy.name, "name"), (strategy.task, "task")):
        if len(text) > _MAX_NAME or not text.isprintable():
            raise errors.InvalidRequestError(
                f"strategy.{field} must be at most {_MAX_NAME} printable characters",
                param=f"strategy.{field}",
            )
    wtp = None
    if strategy.HasField("willingness_to_pay"):
        wtp = _non_negative(strategy, "willingness_to_pay")
    return Target(
        name=strategy.name,
        kind=_KINDS_FROM_PB.get(strategy.kind, ""),
        models=tuple(strategy.models),
        task=strategy.task,
        willingness_to_pay=wtp,
        max_cost=max_cost,
    )


def _non_negative(message: Any, field: str) -> float:
    value = float(getattr(message, field))
    if not (math.isfinite(value) and value >= 0):
        raise errors.InvalidRequestError(f"{field} must be a finite number >= 0", param=field)
    return value


def draft_of(request: broker_pb2.GenerateRequest, limits: LimitsSettings) -> LocalDraft | None:
    """The device's draft, when the request carries one, checked."""
    if not request.HasField("local_draft"):
        return None
    draft = request.local_draft
    if len(draft.text) > limits.max_prompt_chars:
        raise errors.InvalidRequestError(
            f"local_draft.text is {len(draft.text)} characters; at most {limits.max_prompt_chars}",
            param="local_draft.text",
        )
    if not (math.isfinite(draft.confidence) and 0 <= draft.confidence <= 1):
        raise errors.InvalidRequestError(
            "local_draft.confidence must be within [0, 1]", param="local_draft.confidence"
        )
    if len(draft.model) > _MAX_NAME:
        raise errors.InvalidRequestError("local_draft.model is too long", param="local_draft.model")
    return LocalDraft(draft.text, draft.confidence, draft.model, draft.completion_tokens)


def backend_request(request: broker_pb2.GenerateRequest, limits: LimitsSettings) -> BackendRequest:
    """The request's messages and sampling, checked against ``limits``."""
    if len(request.request_id) > _MAX_REQUEST_ID:
        raise errors.InvalidRequestError(
            f"request_id is {len(request.request_id)} characters; at most {_MAX_REQUEST_ID}"
        )
    messages = _messages(request, limits)
    return BackendRequest(request.request_id, messages, _params(request.params, limits))


def _messages(
    request: broker_pb2.GenerateRequest, limits: LimitsSettings
) -> tuple[ChatMessage, ...]:
    if not request.messages:
        raise errors.InvalidRequestError("messages is empty: send at least one message")
    if len(request.messages) > limits.max_messages:
        raise errors.InvalidRequestError(
            f"{len(request.messages)} messages; this broker takes at most {limits.max_messages}"
        )
    chars = 0
    messages = []
    for index, message in enumerate(request.messages):
        role = ROLES_FROM_PB.get(message.role)
        if role is None:
            raise errors.InvalidRequestError(f"messages[{index}].role is not set")
        chars += len(message.content)
        messages.append(ChatMessage(role, message.content))  # type: ignore[arg-type]
    if chars > limits.max_prompt_chars:
        raise errors.InvalidRequestError(
            f"prompt is {chars} characters; this broker takes at most {limits.max_prompt_chars}"
        )
    if not any(m.content.strip() for m in messages if m.role == "user"):
        raise errors.EmptyPromptError("no user message with text")
    return tuple(messages)


def _params(params: broker_pb2.SamplingParams, limits: LimitsSettings) -> SamplingParams:
    max_tokens = limits.default_max_tokens
    if params.HasField("max_tokens"):
        if params.max_tokens == 0:
            raise errors.InvalidRequestError("params.max_tokens must be at least 1")
        max_tokens = min(params.max_tokens, limits.max_tokens)
    sampling: dict[str, Any] = {"max_tokens": max_tokens}
    if params.HasField("temperature"):
        if not (math.isfinite(params.temperature) and 0 <= params.temperature <= 2):
            raise errors.InvalidRequestError("params.temperature must be within [0, 2]")
        sampling["temperature"] = params.temperature
    if params.HasField("top_p"):
        if not (math.isfinite(params.top_p) and 0 < params.top_p <= 1):
            raise errors.InvalidRequestError("params.top_p must be within (0, 1]")
        sampling["top_p"] = params.top_p
    if params.HasField("top_k"):
        sampling["top_k"] = params.top_k
    if params.HasField("seed"):
        if params.seed > _MAX_SEED:
            raise errors.InvalidRequestError(f"params.seed must be at most {_MAX_SEED}")
        sampling["seed"] = params.seed
    if params.stop:
        sampling["stop"] = _stops(params.stop)
    if params.choices:
        sampling["choices"] = check_choices(params.choices, "params.choices")
    return SamplingParams(**sampling)


def _stops(stops: Any) -> tuple[str, ...]:
    if len(stops) > MAX_STOPS:
        raise errors.InvalidRequestError(f"at most {MAX_STOPS} stop sequences")
    if any(not stop or len(stop) > MAX_STOP_CHARS for stop in stops):
        raise errors.InvalidRequestError(f"stop sequences must be 1-{MAX_STOP_CHARS} characters")
    return tuple(stops)


def delta_to_pb(text: str, model: str) -> broker_pb2.GenerateResponse:
    return broker_pb2.GenerateResponse(delta=broker_pb2.TextDelta(text=text, model=model))


def result_to_pb(
    outcome: StrategyOutcome, queue_s: float, first_s: float, total_s: float
) -> broker_pb2.GenerateResponse:
    result = broker_pb2.GenerateResult(
        finish_reason=FINISH_TO_PB[outcome.finish_reason],
        models_used=outcome.models_used,
        answer_model=outcome.answer_model,
        usage=broker_pb2.Usage(
            prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens
        ),
        timings=broker_pb2.BrokerTimings(
            queue_ms=queue_s * 1000,
            time_to_first_token_ms=first_s * 1000,
            total_ms=total_s * 1000,
        ),
        strategy=KINDS_TO_PB[outcome.kind],
        members=[_member_to_pb(member) for member in outcome.members],
        cost=outcome.cost,
        strategy_name=outcome.name,
        notes=outcome.notes,
    )
    if outcome.verdict is not None:
        verdict = outcome.verdict
        result.draft_verdict.CopyFrom(
            broker_pb2.DraftVerdict(
                accepted=verdict.accepted, score=verdict.score, verifier=verdict.verifier
            )
        )
    return broker_pb2.GenerateResponse(result=result)


def _member_to_pb(member: Member) -> broker_pb2.MemberRecord:
    record = broker_pb2.MemberRecord(
        model=member.model,
        role=member.role,
        usage=broker_pb2.Usage(
            prompt_tokens=member.prompt_tokens, completion_tokens=member.completion_tokens
        ),
        cost=member.cost,
        latency_ms=member.latency_ms,
        vote=member.vote,
        accepted=member.accepted,
        note=member.note,
    )
    if member.score is not None:
        record.score = member.score
    return record


def models_to_pb(
    backends: Iterable[Backend],
    default_model: str,
    prices: Prices,
    strategies: Sequence[StrategySettings] = (),
) -> broker_pb2.ListModelsResponse:
    """What ListModels answers: each backend by name with its prices, the strategy
    kinds, the named strategies, the default."""
    models = []
    for backend in sorted(backends, key=lambda b: b.name):
        prompt, completion = prices.per_1k(backend.name)
        models.append(
            broker_pb2.ModelInfo(
                name=backend.name,
                backend=backend.kind,
                role=backend.role,
                context_length=backend.context_length,
                prompt_price_per_1k=prompt,
                completion_price_per_1k=completion,
            )
        )
    return broker_pb2.ListModelsResponse(
        models=models,
        strategies=list(KINDS_TO_PB.values()),
        default_model=default_model,
        named_strategies=[
            broker_pb2.StrategyInfo(
                name=s.name,
                kind=KINDS_TO_PB[s.kind],
                models=s.models,
                method=s.method,
                max_cost=s.max_cost,
            )
            for s in strategies
        ],
    )

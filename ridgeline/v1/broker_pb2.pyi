from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_STOP_SEQUENCE: _ClassVar[FinishReason]
    FINISH_REASON_CANCELLED: _ClassVar[FinishReason]
ROLE_UNSPECIFIED: Role
ROLE_SYSTEM: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_STOP_SEQUENCE: FinishReason
FINISH_REASON_CANCELLED: FinishReason

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[str] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "choices")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    choices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., choices: _Optional[_Iterable[str]] = ...) -> None: ...

class Strategy(_message.Message):
    __slots__ = ("kind", "models", "name", "willingness_to_pay", "task")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Strategy.Kind]
        KIND_SINGLE: _ClassVar[Strategy.Kind]
        KIND_ROUTE: _ClassVar[Strategy.Kind]
        KIND_ENSEMBLE: _ClassVar[Strategy.Kind]
        KIND_CASCADE: _ClassVar[Strategy.Kind]
    KIND_UNSPECIFIED: Strategy.Kind
    KIND_SINGLE: Strategy.Kind
    KIND_ROUTE: Strategy.Kind
    KIND_ENSEMBLE: Strategy.Kind
    KIND_CASCADE: Strategy.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WILLINGNESS_TO_PAY_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    kind: Strategy.Kind
    models: _containers.RepeatedScalarFieldContainer[str]
    name: str
    willingness_to_pay: float
    task: str
    def __init__(self, kind: _Optional[_Union[Strategy.Kind, str]] = ..., models: _Optional[_Iterable[str]] = ..., name: _Optional[str] = ..., willingness_to_pay: _Optional[float] = ..., task: _Optional[str] = ...) -> None: ...

class LocalDraft(_message.Message):
    __slots__ = ("text", "confidence", "model", "completion_tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    model: str
    completion_tokens: int
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., model: _Optional[str] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "device_id", "messages", "params", "model", "strategy", "local_draft", "max_cost")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    LOCAL_DRAFT_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    device_id: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    params: SamplingParams
    model: str
    strategy: Strategy
    local_draft: LocalDraft
    max_cost: float
    def __init__(self, request_id: _Optional[str] = ..., device_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., params: _Optional[_Union[SamplingParams, _Mapping]] = ..., model: _Optional[str] = ..., strategy: _Optional[_Union[Strategy, _Mapping]] = ..., local_draft: _Optional[_Union[LocalDraft, _Mapping]] = ..., max_cost: _Optional[float] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text", "model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    model: str
    def __init__(self, text: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class BrokerTimings(_message.Message):
    __slots__ = ("queue_ms", "time_to_first_token_ms", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    time_to_first_token_ms: float
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class MemberRecord(_message.Message):
    __slots__ = ("model", "role", "usage", "cost", "latency_ms", "score", "vote", "accepted", "note")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    model: str
    role: str
    usage: Usage
    cost: float
    latency_ms: float
    score: float
    vote: str
    accepted: bool
    note: str
    def __init__(self, model: _Optional[str] = ..., role: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost: _Optional[float] = ..., latency_ms: _Optional[float] = ..., score: _Optional[float] = ..., vote: _Optional[str] = ..., accepted: _Optional[bool] = ..., note: _Optional[str] = ...) -> None: ...

class DraftVerdict(_message.Message):
    __slots__ = ("accepted", "score", "verifier")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    score: float
    verifier: str
    def __init__(self, accepted: _Optional[bool] = ..., score: _Optional[float] = ..., verifier: _Optional[str] = ...) -> None: ...

class GenerateResult(_message.Message):
    __slots__ = ("finish_reason", "models_used", "answer_model", "usage", "timings", "strategy", "members", "cost", "strategy_name", "draft_verdict", "notes")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MODELS_USED_FIELD_NUMBER: _ClassVar[int]
    ANSWER_MODEL_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_NAME_FIELD_NUMBER: _ClassVar[int]
    DRAFT_VERDICT_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    models_used: _containers.RepeatedScalarFieldContainer[str]
    answer_model: str
    usage: Usage
    timings: BrokerTimings
    strategy: Strategy.Kind
    members: _containers.RepeatedCompositeFieldContainer[MemberRecord]
    cost: float
    strategy_name: str
    draft_verdict: DraftVerdict
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., models_used: _Optional[_Iterable[str]] = ..., answer_model: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[BrokerTimings, _Mapping]] = ..., strategy: _Optional[_Union[Strategy.Kind, str]] = ..., members: _Optional[_Iterable[_Union[MemberRecord, _Mapping]]] = ..., cost: _Optional[float] = ..., strategy_name: _Optional[str] = ..., draft_verdict: _Optional[_Union[DraftVerdict, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("delta", "result")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    delta: TextDelta
    result: GenerateResult
    def __init__(self, delta: _Optional[_Union[TextDelta, _Mapping]] = ..., result: _Optional[_Union[GenerateResult, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "backend", "role", "context_length", "prompt_price_per_1k", "completion_price_per_1k")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_PRICE_PER_1K_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_PRICE_PER_1K_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend: str
    role: str
    context_length: int
    prompt_price_per_1k: float
    completion_price_per_1k: float
    def __init__(self, name: _Optional[str] = ..., backend: _Optional[str] = ..., role: _Optional[str] = ..., context_length: _Optional[int] = ..., prompt_price_per_1k: _Optional[float] = ..., completion_price_per_1k: _Optional[float] = ...) -> None: ...

class StrategyInfo(_message.Message):
    __slots__ = ("name", "kind", "models", "method", "max_cost")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: Strategy.Kind
    models: _containers.RepeatedScalarFieldContainer[str]
    method: str
    max_cost: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[Strategy.Kind, str]] = ..., models: _Optional[_Iterable[str]] = ..., method: _Optional[str] = ..., max_cost: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "strategies", "default_model", "named_strategies")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    NAMED_STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    strategies: _containers.RepeatedScalarFieldContainer[Strategy.Kind]
    default_model: str
    named_strategies: _containers.RepeatedCompositeFieldContainer[StrategyInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., strategies: _Optional[_Iterable[_Union[Strategy.Kind, str]]] = ..., default_model: _Optional[str] = ..., named_strategies: _Optional[_Iterable[_Union[StrategyInfo, _Mapping]]] = ...) -> None: ...

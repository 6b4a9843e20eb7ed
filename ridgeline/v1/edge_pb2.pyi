from ridgeline.v1 import broker_pb2 as _broker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AskRequest(_message.Message):
    __slots__ = ("messages", "model", "max_tokens", "temperature", "top_p", "seed", "stop", "mode", "threshold", "deadline_s", "live", "private", "knowledge", "strategy", "max_cost")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_broker_pb2.ChatMessage]
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    mode: str
    threshold: float
    deadline_s: float
    live: bool
    private: bool
    knowledge: _containers.RepeatedScalarFieldContainer[str]
    strategy: str
    max_cost: float
    def __init__(self, messages: _Optional[_Iterable[_Union[_broker_pb2.ChatMessage, _Mapping]]] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., mode: _Optional[str] = ..., threshold: _Optional[float] = ..., deadline_s: _Optional[float] = ..., live: _Optional[bool] = ..., private: _Optional[bool] = ..., knowledge: _Optional[_Iterable[str]] = ..., strategy: _Optional[str] = ..., max_cost: _Optional[float] = ...) -> None: ...

class AskReset(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class AskDecided(_message.Message):
    __slots__ = ("path", "reason")
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    path: str
    reason: str
    def __init__(self, path: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AskAnswer(_message.Message):
    __slots__ = ("answer_json",)
    ANSWER_JSON_FIELD_NUMBER: _ClassVar[int]
    answer_json: str
    def __init__(self, answer_json: _Optional[str] = ...) -> None: ...

class AskEvent(_message.Message):
    __slots__ = ("delta", "reset", "answer", "decided")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    DECIDED_FIELD_NUMBER: _ClassVar[int]
    delta: _broker_pb2.TextDelta
    reset: AskReset
    answer: AskAnswer
    decided: AskDecided
    def __init__(self, delta: _Optional[_Union[_broker_pb2.TextDelta, _Mapping]] = ..., reset: _Optional[_Union[AskReset, _Mapping]] = ..., answer: _Optional[_Union[AskAnswer, _Mapping]] = ..., decided: _Optional[_Union[AskDecided, _Mapping]] = ...) -> None: ...

class ListLocalModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LocalModel(_message.Message):
    __slots__ = ("name", "runtime", "role", "context_length", "pulled", "loaded", "default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PULLED_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    runtime: str
    role: str
    context_length: int
    pulled: bool
    loaded: bool
    default: bool
    def __init__(self, name: _Optional[str] = ..., runtime: _Optional[str] = ..., role: _Optional[str] = ..., context_length: _Optional[int] = ..., pulled: _Optional[bool] = ..., loaded: _Optional[bool] = ..., default: _Optional[bool] = ...) -> None: ...

class ListLocalModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[LocalModel]
    def __init__(self, models: _Optional[_Iterable[_Union[LocalModel, _Mapping]]] = ...) -> None: ...

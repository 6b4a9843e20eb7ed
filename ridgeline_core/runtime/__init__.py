"""Runtime seam: load a model file and stream tokens with per-token confidence signals."""

from .base import (
    Generation,
    Runtime,
    ShortAnswerRuntime,
    ThreadedRuntime,
    load_runtime,
    register_runtime,
    registered_runtimes,
)
from .pool import RuntimePool
from .types import (
    MAX_STOP_CHARS,
    MAX_STOPS,
    ChatMessage,
    FinishReason,
    GenerationStats,
    LoadOptions,
    SamplingParams,
    ShortGeneration,
    Token,
    TokenSignals,
)

__all__ = [
    "MAX_STOPS",
    "MAX_STOP_CHARS",
    "ChatMessage",
    "FinishReason",
    "Generation",
    "GenerationStats",
    "LoadOptions",
    "Runtime",
    "RuntimePool",
    "SamplingParams",
    "ShortAnswerRuntime",
    "ShortGeneration",
    "ThreadedRuntime",
    "Token",
    "TokenSignals",
    "load_runtime",
    "register_runtime",
    "registered_runtimes",
]

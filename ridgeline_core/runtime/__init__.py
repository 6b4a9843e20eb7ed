"""Runtime seam: load a model file and stream tokens with per-token confidence signals."""

from .base import Generation, Runtime, load_runtime, register_runtime, registered_runtimes
from .pool import RuntimePool
from .types import (
    ChatMessage,
    FinishReason,
    GenerationStats,
    LoadOptions,
    SamplingParams,
    Token,
    TokenSignals,
)

__all__ = [
    "ChatMessage",
    "FinishReason",
    "Generation",
    "GenerationStats",
    "LoadOptions",
    "Runtime",
    "RuntimePool",
    "SamplingParams",
    "Token",
    "TokenSignals",
    "load_runtime",
    "register_runtime",
    "registered_runtimes",
]

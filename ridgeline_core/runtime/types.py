"""Plain data types shared by every runtime adapter (no library types leak out)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CPU_N_BATCH",
    "GPU_N_BATCH",
    "MAX_STOPS",
    "MAX_STOP_CHARS",
    "ChatMessage",
    "FinishReason",
    "GenerationStats",
    "LoadOptions",
    "LoraAdapter",
    "SamplingParams",
    "ShortGeneration",
    "Token",
    "TokenSignals",
]

Role = Literal["system", "user", "assistant"]

# Stop sequences one request may set, and their length: the edge daemon and the broker
# check the same limits, so what one accepts the other does not refuse.
MAX_STOPS = 8
MAX_STOP_CHARS = 64


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter (a GGUF file) applied to the model for one generation, at ``scale``
    (0 leaves the model as it is). With ``sha256``, the file must match it."""

    path: str
    scale: float = 1.0
    sha256: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. ``temperature == 0`` is greedy (deterministic).

    ``choices``: when not empty, the answer is exactly one of these strings (see
    :mod:`ridgeline_core.runtime.choices` for the limits); stop sequences are then
    ignored, and ``max_tokens`` does not cut a choice short. A runtime or backend that
    cannot constrain its output raises UnsupportedError rather than ignore it.
    ``adapters``: LoRA adapters applied for this generation (llama.cpp); a runtime that
    cannot apply them raises UnsupportedError.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    seed: int | None = None
    stop: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    adapters: tuple[LoraAdapter, ...] = ()


# Prompt tokens per forward pass when the settings leave it open. A prompt reuses only
# whole n_batch chunks of the previous one (llama_reuse), so a small batch keeps more of a
# conversation; on a CPU 64 evaluates a prompt as fast as 512, a GPU wants large batches.
CPU_N_BATCH = 64
GPU_N_BATCH = 512


@dataclass(frozen=True)
class LoadOptions:
    """How a runtime loads a model file; part of the loaded model's identity."""

    n_ctx: int = 2048
    n_threads: int | None = None  # None: the physical cores this process may use
    n_threads_batch: int | None = None
    n_batch: int | None = None  # None: CPU_N_BATCH without GPU layers, GPU_N_BATCH with
    n_gpu_layers: int = 0  # -1 offloads every layer (CUDA/Metal builds)
    signals: bool = True  # compute per-token confidence signals

    @property
    def batch(self) -> int:
        """Prompt tokens per forward pass: ``n_batch``, or the default for the device."""
        if self.n_batch is not None:
            return self.n_batch
        return GPU_N_BATCH if self.n_gpu_layers else CPU_N_BATCH


@dataclass(frozen=True, slots=True)
class TokenSignals:
    """Confidence signals of one generated token, from the raw next-token logits.

    ``prob``: probability of the chosen token; ``entropy``: entropy of the
    next-token distribution in nats; ``margin``: top-1 minus top-2 probability.
    """

    prob: float
    entropy: float
    margin: float


@dataclass(frozen=True, slots=True)
class Token:
    """One generated token. ``text`` may be empty while a multi-byte character or a
    possible stop sequence is pending; text held back that way and released at
    the end of the stream arrives as a final ``Token`` with ``id=None``."""

    id: int | None
    text: str
    signals: TokenSignals | None


class FinishReason(str, enum.Enum):
    STOP = "stop"  # end-of-generation token
    LENGTH = "length"  # max_tokens or the context filled up
    STOP_SEQUENCE = "stop_sequence"
    CANCELLED = "cancelled"


@dataclass
class GenerationStats:
    """Filled in while a generation runs; final once the stream is exhausted."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    time_to_first_token_s: float | None = None
    total_s: float = 0.0
    eog_signals: TokenSignals | None = None  # signals of the end-of-generation token
    stop_sequence: str | None = None
    signals_s: float = 0.0  # time spent computing per-token signals
    cached_tokens: int = 0  # prompt tokens kept from the context, not evaluated again

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed after the first token (prefill excluded)."""
        if self.time_to_first_token_s is None or self.completion_tokens < 2:
            return None
        decode = self.total_s - self.time_to_first_token_s
        return (self.completion_tokens - 1) / decode if decode > 0 else None


@dataclass(frozen=True)
class ShortGeneration:
    """A short answer to a few-shot prompt: its text (to the newline), tokens, signals."""

    text: str
    tokens: tuple[int, ...]
    signals: tuple[TokenSignals, ...]
    prompt_tokens: int  # the prompt's tokens
    kept_tokens: int  # of them, those whose state was kept from an earlier request

"""What the broker serves a model with: a small async interface and a registry of kinds.

A backend streams one request as text pieces (``str``) followed by exactly one
:class:`Outcome`. It never sees gRPC: the service validates requests, admits
them through the model's :class:`~cloud_broker.admission.Admission`, and turns
what a backend yields into ``ridgeline.v1`` messages. Closing the stream early
(the client cancelled, or its deadline passed) must stop the work upstream.
With ``params.choices`` the text a backend yields must be exactly one of them; a
backend that cannot guarantee that raises UnsupportedError rather than ignore it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ridgeline_core.runtime import ChatMessage, FinishReason, SamplingParams

from ..admission import Admission

__all__ = ["AnswerSignals", "Backend", "BackendRequest", "Outcome", "Probe"]


@dataclass(frozen=True)
class BackendRequest:
    request_id: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams
    signals: bool = False  # ask for token signals (openai: logprobs)


@dataclass(frozen=True)
class AnswerSignals:
    """Natural-log probabilities of the answer's generated tokens, summarised."""

    mean_logprob: float
    min_logprob: float
    tokens: int


@dataclass(frozen=True)
class Outcome:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    signals: AnswerSignals | None = None


@dataclass(frozen=True)
class Probe:
    """The probability of each candidate's first token, from one forward pass."""

    probs: tuple[float, ...]
    prompt_tokens: int


class Backend(Protocol):
    name: str  # the model name clients ask for
    kind: str  # "llama.cpp", "openai"
    role: str  # "chat", "base"
    context_length: int
    admission: Admission

    @property
    def running(self) -> int:
        """Generations still running in the backend, cancelled ones that are stopping too."""

    async def start(self) -> None:
        """Load the model or open connections; called once before serving."""

    def stream(self, request: BackendRequest) -> AsyncGenerator[str | Outcome, None]:
        """Text pieces, then one :class:`Outcome`."""

    async def next_token_probs(
        self, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
    ) -> Probe:
        """For a chat whose assistant turn is about to start, the probability that the
        answer's first token is each candidate's first token: one forward pass, no
        generation. The caller holds the admission slot."""

    async def close(self) -> None:
        """Stop running work and free resources."""

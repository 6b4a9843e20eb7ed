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

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from ridgeline_core.runtime import ChatMessage, FinishReason, SamplingParams

from ..admission import Admission

__all__ = ["Backend", "BackendRequest", "Outcome"]


@dataclass(frozen=True)
class BackendRequest:
    request_id: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams


@dataclass(frozen=True)
class Outcome:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


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

    async def close(self) -> None:
        """Stop running work and free resources."""

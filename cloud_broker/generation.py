"""One generation in the broker's domain: admit it to the model's slots, stream the
backend, and charge the device's token budget, whatever way it ends.

No protobuf here: the servicer (:mod:`.service`) converts at the boundary through
:mod:`.wire`, and records the metrics from :class:`GenerationTimes`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from ridgeline_core import errors

from .backends import Backend, BackendRequest, Outcome
from .ratelimit import Rate

__all__ = ["GenerationTimes", "generate"]


@dataclass
class GenerationTimes:
    """When the call arrived, got its slot, streamed its first text and ended."""

    received: float
    admitted: float | None = None
    first: float | None = None
    done: float | None = None
    streamed_chars: int = field(default=0)

    @property
    def queue_s(self) -> float:
        return (self.admitted or self.received) - self.received

    @property
    def first_s(self) -> float:
        return (self.first or self.done or self.received) - self.received

    @property
    def total_s(self) -> float:
        return (self.done or self.received) - self.received


async def generate(
    backend: Backend,
    request: BackendRequest,
    device: str,
    rate: Rate,
    times: GenerationTimes,
) -> AsyncGenerator[str | Outcome, None]:
    """Text pieces, then the :class:`Outcome`; UnavailableError when the model ended
    without one. Cancelled or failed midway, the device is charged an estimate, never
    nothing."""
    admission = backend.admission
    await admission.acquire()
    times.admitted = time.perf_counter()
    outcome: Outcome | None = None
    try:
        # aclosing: the backend's cleanup (stopping its work) runs now, in this task,
        # before the slot is released, not whenever the generator is freed
        async with contextlib.aclosing(backend.stream(request)) as stream:
            async for item in stream:
                if isinstance(item, str):
                    if times.first is None:
                        times.first = time.perf_counter()
                    times.streamed_chars += len(item)
                    yield item
                else:
                    outcome = item
    finally:
        times.done = time.perf_counter()
        admission.release(times.done - times.admitted)
        rate.charge(device, _tokens_used(request, outcome, times.streamed_chars))
    if outcome is None:
        raise errors.UnavailableError(f"model {backend.name!r} ended without a result")
    yield outcome  # last, once the slot is free and the tokens are charged


def _tokens_used(request: BackendRequest, outcome: Outcome | None, streamed_chars: int) -> int:
    if outcome is not None:
        return outcome.prompt_tokens + outcome.completion_tokens
    prompt_chars = sum(len(m.content) for m in request.messages)
    return (prompt_chars + streamed_chars + 3) // 4

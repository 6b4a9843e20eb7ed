"""One replica of a served model: the broker's own backend (llama.cpp from the store,
or an OpenAI-compatible server) inside a Ray Serve replica.

Serve sends a replica at most ``slots`` requests at once (``max_ongoing_requests``)
and queues the rest at the callers' handles; the backend's own admission is taken
here too, so what the backend assumes about its slots holds. A stream the front
cancels is cancelled here (Serve cancels the task), which closes the backend's
stream and stops the generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from ridgeline_core.runtime import ChatMessage

from ..backends import Backend, BackendRequest, Outcome, Probe
from ..server import build_backend
from ..settings import BrokerSettings

__all__ = ["ModelReplica", "ReplicaInfo", "slots_of"]

log = logging.getLogger("ridgeline.broker")


@dataclass(frozen=True)
class _End:
    error: BaseException | None


@dataclass(frozen=True)
class ReplicaInfo:
    """What the front needs to know about a model it reaches through a handle."""

    name: str
    kind: str
    role: str
    context_length: int
    slots: int
    queue: int


def slots_of(settings: BrokerSettings, name: str) -> tuple[int, int]:
    """A served model's slots and queue per replica, from its backend's settings."""
    for entry in settings.openai:
        if entry.name == name:
            return entry.slots, entry.queue
    return settings.llama_cpp.slots, settings.llama_cpp.queue


class ModelReplica:
    """The body of a model's Serve deployment (:func:`cloud_broker.on_ray.app.broker_app`)."""

    backend: Backend

    async def __init__(self, settings: BrokerSettings, name: str) -> None:  # type: ignore[misc]  # Serve awaits it
        self.backend = build_backend(settings, name, log.info)
        slots, queue = slots_of(settings, name)
        self._info = ReplicaInfo(
            name,
            self.backend.kind,
            self.backend.role,
            self.backend.context_length,
            slots,
            queue,
        )
        await self.backend.start()

    def info(self) -> ReplicaInfo:
        return self._info

    async def stream(self, request: BackendRequest) -> AsyncGenerator[list[str | Outcome], None]:
        """The backend's items, in lists of what is ready: one item per message while
        the model is slower than the link, fewer messages when it is faster (each
        streamed message costs Ray about a millisecond here)."""
        ready: asyncio.Queue[str | Outcome | _End] = asyncio.Queue()
        producing = asyncio.create_task(_produce(self.backend, request, ready))
        try:
            while True:
                batch = [await ready.get()]
                while not ready.empty():
                    batch.append(ready.get_nowait())
                end = batch[-1]
                if isinstance(end, _End):
                    if batch[:-1]:
                        yield batch[:-1]  # type: ignore[misc]  # no _End before the last
                    if end.error is not None:
                        raise end.error
                    return
                yield batch  # type: ignore[misc]  # checked above: no _End in it
        finally:
            producing.cancel()
            await asyncio.gather(producing, return_exceptions=True)

    async def next_token_probs(
        self, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
    ) -> Probe:
        admission = self.backend.admission
        await admission.acquire()
        try:
            return await self.backend.next_token_probs(messages, candidates)
        finally:
            admission.release()

    async def __del__(self) -> None:  # Serve awaits it when the replica stops
        await self.backend.close()


async def _produce(
    backend: Backend, request: BackendRequest, ready: asyncio.Queue[str | Outcome | _End]
) -> None:
    """The backend's items into ``ready``, then :class:`_End` (with its error, if any)."""
    admission = backend.admission
    await admission.acquire()
    error: BaseException | None = None
    try:
        async with contextlib.aclosing(backend.stream(request)) as stream:
            async for item in stream:
                ready.put_nowait(item)
    except Exception as exc:  # raised to the caller by stream()
        error = exc
    finally:
        admission.release()
        ready.put_nowait(_End(error))

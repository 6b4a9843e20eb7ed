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
        self._interval_s = settings.ray.stream_interval_s
        await self.backend.start()

    def info(self) -> ReplicaInfo:
        return self._info

    async def stream(self, request: BackendRequest) -> AsyncGenerator[list[str | Outcome], None]:
        """The backend's items in lists: the first at once, then at most one list per
        ``ray.stream_interval_s`` (each streamed message costs Ray about a millisecond of
        CPU on each side here, so a fast model's tokens travel together)."""
        pieces = _Pieces(self._interval_s)
        producing = asyncio.create_task(_produce(self.backend, request, pieces.ready))
        try:
            while True:
                batch = await pieces.next()
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


class _Pieces:
    """What the backend made, handed out in lists: everything ready, the first list at
    once and each later one no sooner than ``interval_s`` after the one before (an end
    that arrives alone is not held back)."""

    def __init__(self, interval_s: float) -> None:
        self.ready: asyncio.Queue[str | Outcome | _End] = asyncio.Queue()
        self._interval_s = interval_s
        self._sent: float | None = None

    async def next(self) -> list[str | Outcome | _End]:
        batch = [await self.ready.get()]
        loop = asyncio.get_running_loop()
        if self._sent is not None and not isinstance(batch[0], _End):
            wait = self._sent + self._interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        while not self.ready.empty():
            batch.append(self.ready.get_nowait())
        self._sent = loop.time()
        return batch


async def _produce(
    backend: Backend, request: BackendRequest, ready: asyncio.Queue[str | Outcome | _End]
) -> None:
    """The backend's items into ``ready``, then :class:`_End` (with its error, if any)."""
    admission = backend.admission
    admitted = False
    error: BaseException | None = None
    try:
        await admission.acquire()
        admitted = True
        async with contextlib.aclosing(backend.stream(request)) as stream:
            async for item in stream:
                ready.put_nowait(item)
    except Exception as exc:  # raised to the caller by stream()
        error = exc
    finally:
        if admitted:
            admission.release()
        ready.put_nowait(_End(error))

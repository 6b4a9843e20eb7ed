"""A served model as a front on Ray sees it: the :class:`~cloud_broker.backends.Backend`
interface over a Serve deployment handle, streaming.

Failures come back as the broker's own errors, so the client gets a precise status:

* an error the replica's backend raised (a bad request, an unsupported option) is
  re-raised as it was (Ray wraps it; the wrapping is removed);
* Serve refusing for back pressure (its handle's queue full): QueueFullError,
  RESOURCE_EXHAUSTED with Serve's retry delay (the front's own admission refuses first,
  as in one process);
* the replica died or left with its node: if no text had been streamed yet the
  request is sent again (Serve picks a live replica; up to three tries, 0.2 s, 0.4 s
  apart), otherwise UnavailableError (UNAVAILABLE) saying the answer was cut short.

Closing the stream early (the client cancelled, its deadline passed) cancels the
call in the replica, which stops the generation there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from ridgeline_core import errors
from ridgeline_core.runtime import ChatMessage

from ..admission import Admission
from ..backends import BackendRequest, Outcome, Probe
from .replica import ReplicaInfo

__all__ = ["RemoteBackend"]

_TRIES = 3
_RETRY_S = 0.2


class RemoteBackend:
    """One served model's deployment, called from a front."""

    def __init__(self, handle: Any, info: ReplicaInfo, most_replicas: int) -> None:
        self.name = info.name
        self.kind = info.kind
        self.role = info.role
        self.context_length = info.context_length
        # The front sends up to what all replicas could run (autoscaling sees them at the
        # handle) and queues `queue` more itself, refusing the rest at once, as one
        # process does; Serve runs at most `slots` on each replica.
        self.admission = Admission(info.name, info.slots * most_replicas, info.queue)
        self._handle = handle
        self._streams = handle.options(stream=True)
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    async def start(self) -> None:
        """The replicas are started by Serve."""

    async def close(self) -> None:
        """The replicas are stopped by Serve."""

    async def stream(self, request: BackendRequest) -> AsyncGenerator[str | Outcome, None]:
        self._running += 1
        try:
            for attempt in range(1, _TRIES + 1):
                started = False
                call = self._streams.stream.remote(request)
                try:
                    async for batch in call:
                        started = True
                        for item in batch:
                            yield item
                    return
                except (GeneratorExit, asyncio.CancelledError):
                    call.cancel()
                    raise
                except Exception as exc:
                    call.cancel()
                    error = _broker_error(self.name, exc, started)
                    if not _retryable(exc) or started or attempt == _TRIES:
                        raise error from None
                await asyncio.sleep(_RETRY_S * attempt)
        finally:
            self._running -= 1

    async def next_token_probs(
        self, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
    ) -> Probe:
        for attempt in range(1, _TRIES + 1):
            try:
                probe: Probe = await self._handle.next_token_probs.remote(messages, candidates)
                return probe
            except Exception as exc:
                if not _retryable(exc) or attempt == _TRIES:
                    raise _broker_error(self.name, exc, False) from None
            await asyncio.sleep(_RETRY_S * attempt)
        raise AssertionError("unreachable")


def _retryable(exc: Exception) -> bool:
    """The replica (or its node) went away, or Serve has none ready just now."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    return isinstance(
        exc,
        ray_errors.RayActorError
        | ray_errors.WorkerCrashedError
        | ray_errors.NodeDiedError
        | serve_errors.ReplicaUnavailableError
        | serve_errors.DeploymentUnavailableError,
    )


def _broker_error(name: str, exc: Exception, started: bool) -> Exception:
    """The broker's error for a failed call to a replica."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    if isinstance(exc, ray_errors.RayTaskError):
        cause = exc.cause
        if isinstance(cause, errors.RidgelineError):
            return cause
    if isinstance(exc, serve_errors.BackPressureError):
        return errors.QueueFullError(
            f"model {name!r} is busy: every replica is running and the queue is full",
            exc.retry_after_s or 1.0,
        )
    if _retryable(exc):
        where = (
            "while it was answering; the answer was cut short, ask again"
            if started
            else f"before it answered ({_TRIES} tries)"
        )
        return errors.UnavailableError(f"model {name!r}: its replica stopped {where}")
    return exc

"""From an API request to the agent on a worker thread, within the daemon's capacity.

:class:`Admission` (:mod:`.admission`) holds ``slots`` requests running and ``queue`` more
waiting, and refuses one more at once; :class:`~.inflight.InFlight` counts the requests
let in, per agent, so that an agent replaced by a reload is closed once its last one ends.

:class:`Dispatcher` checks a request, admits it, runs it and hands its events to the
event loop; both APIs (HTTP and gRPC) go through it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ridgeline_core.cancel import CancelToken
from ridgeline_core.errors import RequestCancelledError, UnavailableError

from ..agent import EdgeAgent
from ..request.answer import Answer
from ..request.conversation import Prompt
from ..request.events import Decided, Done, Reset, TextChunk
from ..request.options import RequestOptions
from ..request.pipeline import PreparedRequest
from ..sdk.api import StreamEvent
from .admission import Admission
from .inflight import SHUTTING_DOWN, InFlight

__all__ = ["Admission", "Dispatcher", "InFlight", "Job"]


@dataclass
class Job:
    """One admitted request. Iterate its events; leaving the iteration early, or
    :meth:`close`, cancels it."""

    events: asyncio.Queue[StreamEvent | BaseException]
    cancel: CancelToken
    draining: Callable[[], bool]
    finished: bool = False

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        try:
            while True:
                event = await self.events.get()
                if isinstance(event, BaseException):
                    self.finished = True
                    if isinstance(event, RequestCancelledError) and self.draining():
                        # cancelled by the shutdown, not by its client: tell the client why
                        raise UnavailableError(f"{SHUTTING_DOWN}; retry") from event
                    raise event
                if isinstance(event, Done):
                    self.finished = True
                yield event
                if self.finished:
                    return
        finally:
            self.close()

    def close(self) -> None:
        if not self.finished:
            self.finished = True
            self.cancel.cancel("the client went away")

    async def answer(self) -> Answer:
        try:
            async for event in self:
                if isinstance(event, Done):
                    return event.answer
        finally:
            self.close()
        raise RuntimeError("the request ended without an answer")


class Dispatcher:
    """Starts admitted requests on worker threads; :attr:`in_flight` knows which run."""

    def __init__(
        self,
        agent: Callable[[], EdgeAgent],
        in_flight: InFlight,
        executor: concurrent.futures.ThreadPoolExecutor,
        on_answer: Callable[[Answer, float], None],
        on_cancelled: Callable[[], None] = lambda: None,
    ) -> None:
        self._agent = agent  # the current agent (a reload replaces it)
        self.in_flight = in_flight
        self._executor = executor
        self._on_answer = on_answer
        self._on_cancelled = on_cancelled  # counted here: the client is gone by then

    async def start(
        self,
        prompt: Prompt,
        options: RequestOptions,
        *,
        text: bool = True,
        live: bool = False,
        decided: bool = False,
    ) -> Job:
        """Check and admit the request and start it. Raises at once (before any response
        is sent) when the request is malformed, or the daemon is full or draining.

        ``text``: deliver ``TextChunk`` events (a non-streaming caller needs only the
        answer); ``live``: stream broker text as it arrives, with ``Reset`` if it fails,
        and the ``Decided`` events; ``decided``: the ``Decided`` events alone."""
        request = self._agent().prepare(prompt, options)
        agent, cancel = await self.in_flight.admit(self._agent)
        events: asyncio.Queue[StreamEvent | BaseException] = asyncio.Queue()
        wanted: tuple[type, ...] = ((TextChunk,) if text else ()) + (
            (Reset, Decided) if live else (Decided,) if decided else ()
        )
        work = _worker(self, agent, request, events, cancel, wanted=wanted, live=live)
        try:
            self._executor.submit(work)
        except RuntimeError:  # the executor is shut down: the daemon is stopping
            self.in_flight.finished(agent, cancel)
            raise UnavailableError(SHUTTING_DOWN) from None
        return Job(events, cancel, lambda: self.in_flight.draining)


def _worker(
    dispatcher: Dispatcher,
    agent: EdgeAgent,
    request: PreparedRequest,
    events: asyncio.Queue[StreamEvent | BaseException],
    cancel: CancelToken,
    *,
    wanted: tuple[type, ...],
    live: bool,
) -> Callable[[], None]:
    """What a worker thread runs: the request's pipeline, each event of a ``wanted`` kind
    handed to the event loop, then the answer (or the error) and the slot back."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()

    def last(event: StreamEvent | BaseException) -> None:  # on the loop: one wake-up
        events.put_nowait(event)
        dispatcher.in_flight.finished(agent, cancel)

    def work() -> None:
        try:
            for event in agent.run(request, live=live, cancel=cancel).events():
                if isinstance(event, Done):
                    dispatcher._on_answer(event.answer, time.perf_counter() - started)
                    loop.call_soon_threadsafe(last, event)
                    return
                if isinstance(event, wanted):
                    loop.call_soon_threadsafe(events.put_nowait, event)
            raise RuntimeError("the pipeline ended without an answer")
        except BaseException as exc:
            if isinstance(exc, RequestCancelledError):
                dispatcher._on_cancelled()
            loop.call_soon_threadsafe(last, exc)

    return work

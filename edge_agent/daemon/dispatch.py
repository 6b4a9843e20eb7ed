"""From an API request to the agent on a worker thread, within the daemon's capacity.

:class:`Admission` holds ``slots`` requests running and ``queue`` more waiting; one more
is refused at once (QueueFullError: 503 / RESOURCE_EXHAUSTED) rather than left to time
out. A slot is freed when its worker thread ends, not when its client leaves, so a
cancelled request holds its slot only until its generation notices (the next token).

:class:`Dispatcher` checks a request, admits it, runs it and hands its events to the
event loop; both APIs (HTTP and gRPC) go through it. It counts the requests each agent
is serving, so that an agent replaced by a reload is closed once its last one ends.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ridgeline_core.cancel import CancelToken
from ridgeline_core.errors import QueueFullError, RequestCancelledError, UnavailableError

from ..agent import EdgeAgent
from ..request.answer import Answer
from ..request.conversation import Prompt
from ..request.events import Decided, Done, Reset, TextChunk
from ..request.options import RequestOptions
from ..request.pipeline import PreparedRequest
from ..sdk.api import StreamEvent

__all__ = ["Admission", "Dispatcher", "Job"]

RETRY_AFTER_S = 1.0
SHUTTING_DOWN = "the daemon is shutting down"


class Admission:
    """Slots and a bounded queue, on the event loop (not thread-safe by design).

    Waiters are futures in arrival order; :meth:`leave` hands its slot to the first one
    directly, so that releasing a slot is a plain call (no task, no lock)."""

    def __init__(self, slots: int, queue: int) -> None:
        self.slots = slots
        self.queue = queue
        self.running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def resize(self, slots: int, queue: int) -> None:
        self.slots, self.queue = slots, queue
        self._wake()  # more slots: waiters may go now

    async def enter(self) -> None:
        """Take a slot, waiting in the queue if need be; QueueFullError when full."""
        if self.running < self.slots and not self._waiters:
            self.running += 1
            return
        if self.running + self.waiting >= self.slots + self.queue:
            raise QueueFullError(
                f"the daemon is busy: {self.running} running, {self.waiting} queued "
                f"(daemon.slots {self.slots}, daemon.queue {self.queue}); retry shortly",
                retry_after_s=RETRY_AFTER_S,
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # granted just as its client left: pass the slot on
            else:
                self._waiters.remove(waiter)
            raise

    def leave(self) -> None:
        self.running -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.running < self.slots:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)

    @property
    def in_flight(self) -> int:
        return self.running + self.waiting


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
    def __init__(
        self,
        agent: Callable[[], EdgeAgent],
        admission: Admission,
        executor: concurrent.futures.ThreadPoolExecutor,
        on_answer: Callable[[Answer, float], None],
        on_cancelled: Callable[[], None] = lambda: None,
    ) -> None:
        self._agent = agent  # the current agent (a reload replaces it)
        self.admission = admission
        self._executor = executor
        self._on_answer = on_answer
        self._on_cancelled = on_cancelled  # counted here: the client is gone by then
        self.draining = False
        self._active: set[CancelToken] = set()
        self.serving: Counter[EdgeAgent] = Counter()  # requests admitted, per agent

    async def start(
        self, prompt: Prompt, options: RequestOptions, *, text: bool = True, live: bool = False
    ) -> Job:
        """Check and admit the request and start it. Raises at once (before any response
        is sent) when the request is malformed, or the daemon is full or draining.

        ``text``: deliver ``TextChunk`` events (a non-streaming caller needs only the
        answer); ``live``: stream broker text as it arrives, with ``Reset`` if it fails,
        and the ``Decided`` events."""
        request = self._agent().prepare(prompt, options)
        if self.draining:
            raise UnavailableError(SHUTTING_DOWN)
        await self.admission.enter()
        if self.draining:  # it waited in the queue while the shutdown began
            self.admission.leave()
            raise UnavailableError(SHUTTING_DOWN)
        events: asyncio.Queue[StreamEvent | BaseException] = asyncio.Queue()
        cancel = CancelToken()
        agent = self._agent()
        wanted: tuple[type, ...] = ((TextChunk,) if text else ()) + (
            (Reset, Decided) if live else ()
        )
        work = _worker(self, agent, request, events, cancel, wanted=wanted, live=live)
        self.serving[agent] += 1
        self._active.add(cancel)
        try:
            self._executor.submit(work)
        except RuntimeError:  # the executor is shut down: the daemon is stopping
            self._finished(agent, cancel)
            raise UnavailableError(SHUTTING_DOWN) from None
        return Job(events, cancel, lambda: self.draining)

    def cancel_all(self, reason: str) -> None:
        for cancel in list(self._active):
            cancel.cancel(reason)

    def _finished(self, agent: EdgeAgent, cancel: CancelToken) -> None:
        self._active.discard(cancel)
        self.serving[agent] -= 1
        if self.serving[agent] <= 0:
            del self.serving[agent]
        self.admission.leave()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for admitted ones; False when time ran out."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.admission.in_flight:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True


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
        dispatcher._finished(agent, cancel)

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

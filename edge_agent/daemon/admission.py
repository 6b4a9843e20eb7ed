"""The daemon's capacity: ``slots`` requests running and ``queue`` more waiting.

One more is refused at once (QueueFullError: 503 / RESOURCE_EXHAUSTED) rather than left to
time out. A slot is freed when its worker thread ends, not when its client leaves, so a
cancelled request holds its slot only until its generation notices (the next token).
"""

from __future__ import annotations

import asyncio
import collections

from ridgeline_core.errors import QueueFullError

__all__ = ["RETRY_AFTER_S", "Admission"]

RETRY_AFTER_S = 1.0


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

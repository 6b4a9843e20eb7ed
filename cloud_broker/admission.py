"""Admission to a model: a fixed number of slots and a bounded queue in front of them.

A request that finds every slot busy and the queue full is refused at once
(:class:`QueueFullError`, RESOURCE_EXHAUSTED) rather than left hanging; its
retry delay is the time the queue ahead of it should take, estimated from
recent request durations.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from ridgeline_core.errors import QueueFullError

__all__ = ["Admission"]

_MIN_RETRY_S = 0.05
_MAX_RETRY_S = 30.0


class Admission:
    def __init__(self, model: str, slots: int, queue: int) -> None:
        self.model = model
        self.slots = slots
        self.queue = queue
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._mean_s = 1.0  # running estimate of how long one request holds a slot

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue if needed; raises QueueFullError if it is full."""
        if self.active < self.slots and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.queue:
            retry = self._mean_s * (len(self._waiters) + 1) / self.slots
            raise QueueFullError(
                f"model {self.model!r} is busy: {self.slots} running and {self.queue} queued",
                min(max(retry, _MIN_RETRY_S), _MAX_RETRY_S),
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # a slot was handed over just as we gave up: pass it on
            else:
                # release() may already have dropped it while skipping cancelled waiters
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self, held_s: float | None = None) -> None:
        """Give the slot back (to the first waiter, if any)."""
        if held_s is not None:
            self._mean_s += 0.2 * (held_s - self._mean_s)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; active is unchanged
                return
        self.active -= 1

"""The requests the daemon has let in: admission at the door (none once draining), each
one's cancel token and the agent serving it, until its worker thread gives the slot back.

The per-agent counts tell a reload when a replaced agent is free to close; the cancel
tokens let a drain that ran out of time stop whatever is still running.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from ridgeline_core.cancel import CancelToken
from ridgeline_core.errors import UnavailableError

from ..agent import EdgeAgent
from .admission import Admission

__all__ = ["SHUTTING_DOWN", "InFlight"]

SHUTTING_DOWN = "the daemon is shutting down"


class InFlight:
    """Admitted requests, on the event loop: let in, counted per agent, given back."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.draining = False
        self._active: set[CancelToken] = set()
        self.serving: Counter[EdgeAgent] = Counter()  # requests admitted, per agent

    async def admit(self, agent: Callable[[], EdgeAgent]) -> tuple[EdgeAgent, CancelToken]:
        """Take a slot (waiting in the queue if need be) for the agent serving now, and the
        request's cancel token; UnavailableError once the daemon is draining."""
        if self.draining:
            raise UnavailableError(SHUTTING_DOWN)
        await self.admission.enter()
        if self.draining:  # it waited in the queue while the shutdown began
            self.admission.leave()
            raise UnavailableError(SHUTTING_DOWN)
        serving, cancel = agent(), CancelToken()
        self.serving[serving] += 1
        self._active.add(cancel)
        return serving, cancel

    def finished(self, agent: EdgeAgent, cancel: CancelToken) -> None:
        """The request's worker is done: forget it and hand its slot on."""
        self._active.discard(cancel)
        self.serving[agent] -= 1
        if self.serving[agent] <= 0:
            del self.serving[agent]
        self.admission.leave()

    def cancel_all(self, reason: str) -> None:
        for cancel in list(self._active):
            cancel.cancel(reason)

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait for admitted ones; False when time ran out."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while self.admission.in_flight:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

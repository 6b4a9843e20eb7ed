"""The agent the daemon serves with, and the ones a reload replaced.

A reload builds everything new before anything is swapped, so a bad file, or settings that
fail to build, keep the running ones. A replaced agent is closed once its own requests have
ended; a replaced pool of loaded models once no agent that uses it is left.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from ridgeline_core.runtime import RuntimePool

from ..agent import EdgeAgent
from ..settings import EdgeSettings

__all__ = ["Generations", "make_pool"]


def make_pool(settings: EdgeSettings) -> RuntimePool:
    slots = settings.daemon.slots
    return RuntimePool(
        settings.models.catalog(),
        settings.models.store(),
        settings.runtime.load_options(slots),
        instances=slots,
    )


class Generations:
    def __init__(self, settings: EdgeSettings, key: str | None) -> None:
        self.settings, self.key = settings, key
        self.pool = make_pool(settings)
        self.agent = EdgeAgent(settings, pool=self.pool)
        self._retired: list[EdgeAgent | RuntimePool] = []

    async def replace(self, new: EdgeSettings, key: str | None) -> None:
        """Serve with ``new`` from now on (raises, changing nothing, when it cannot)."""
        old = self.settings
        same_models = (
            new.models == old.models
            and new.runtime == old.runtime
            and new.daemon.slots == old.daemon.slots
        )
        pool = self.pool if same_models else make_pool(new)
        try:
            agent = await asyncio.to_thread(EdgeAgent, new, pool=pool)
        except Exception:
            if pool is not self.pool:
                pool.close()
            raise
        self._retired.append(self.agent)
        if pool is not self.pool:
            self._retired.append(self.pool)
        self.pool, self.agent, self.settings, self.key = pool, agent, new, key

    async def close_retired(self, serving: Counter[EdgeAgent]) -> None:
        """Close replaced agents with no request left, and pools no such agent uses."""
        done_agents = [a for a in self._retired if isinstance(a, EdgeAgent) and not serving[a]]
        agents_left = [a for a in self._retired if isinstance(a, EdgeAgent) and serving[a]]
        pools_in_use = {id(a.pool) for a in agents_left} | {id(self.pool)}
        done_pools = [
            p for p in self._retired if isinstance(p, RuntimePool) and id(p) not in pools_in_use
        ]
        closing: list[EdgeAgent | RuntimePool] = [*done_agents, *done_pools]
        self._retired = [thing for thing in self._retired if thing not in closing]
        for thing in closing:
            await asyncio.to_thread(thing.close)

    async def close(self) -> None:
        closers: list[Callable[[], None]] = [self.agent.close]
        closers += [thing.close for thing in self._retired]
        closers.append(self.pool.close)
        for close in closers:
            await asyncio.to_thread(close)

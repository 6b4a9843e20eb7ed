"""The worker threads of a llama.cpp model's slots: one per loaded copy, each bound to
its copy for its whole life, so a generation runs from start to end on the thread that
owns the copy it runs on."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from ridgeline_core.runtime import Runtime

__all__ = ["BoundThreads"]

T = TypeVar("T")


class BoundThreads:
    """One worker thread per copy; a job runs on a free thread, with that thread's copy."""

    def __init__(self, name: str, runtimes: list[Runtime]) -> None:
        self._free: queue.SimpleQueue[Runtime] = queue.SimpleQueue()
        for runtime in runtimes:
            self._free.put(runtime)
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(
            max_workers=len(runtimes),
            thread_name_prefix=f"llama-{name}",
            initializer=self._bind_runtime,
        )

    def _bind_runtime(self) -> None:
        # each worker thread owns one slot's model for its whole life
        self._local.runtime = self._free.get_nowait()

    def submit(self, job: Callable[[Runtime], T]) -> Future[T]:
        """Run ``job(copy)`` on the next free thread, with the copy that thread owns."""
        return self._executor.submit(self._run, job)

    def _run(self, job: Callable[[Runtime], T]) -> T:
        return job(self._local.runtime)

    async def close(self) -> None:
        """Drop the jobs not started and wait for the running ones to end."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

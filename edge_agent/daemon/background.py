"""The daemon's background tasks and signal handlers: SIGTERM and SIGINT set
:attr:`Background.stopping`, SIGHUP reloads, and tasks (idle unloading, each reload) are
held until done, so none is garbage-collected while it runs, and cancelled at shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Background"]


class Background:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()  # set by SIGTERM or SIGINT: time to shut down
        self._tasks: list[asyncio.Task[None]] = []

    def on_signals(self, reload: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """SIGTERM and SIGINT set :attr:`stopping`; SIGHUP runs ``reload()`` as a task."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(reload()))

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

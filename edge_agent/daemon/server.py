"""``edge-agent serve``: the daemon's lifetime.

Start: refuse a non-loopback bind without an API key, bind HTTP and gRPC, print where
it listens, tell systemd READY=1. While running: unload models idle for
``daemon.idle_unload_s``; on SIGHUP reload the settings (a bad file is logged and the old
settings kept; loaded models are kept when the model settings did not change). SIGTERM
or SIGINT: health turns 503/NOT_SERVING, new requests get 503/UNAVAILABLE, running ones
may finish for ``daemon.drain_s``, then the rest are cancelled and the process exits 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from collections.abc import Callable
from typing import Any

from ridgeline_core.runtime import RuntimePool

from ..agent import EdgeAgent
from ..settings import EdgeSettings
from .dispatch import Admission, Dispatcher
from .generations import Generations
from .listeners import Doors
from .metrics import DaemonMetrics
from .sockets import prepare_socket
from .upkeep import Upkeep, check_binds, sd_notify

_prepare_socket = prepare_socket  # the name tests know it by

__all__ = ["Daemon", "check_binds", "run", "sd_notify"]

log = logging.getLogger(__name__)


class Daemon:
    """``edge-agent serve``: the doors (:mod:`.listeners`), the agent and its replacements
    (:mod:`.generations`), admission and dispatch, and the lifetime: start, SIGHUP reload,
    idle unloading, SIGTERM drain."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        reload: Callable[[], EdgeSettings] | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self._out = out
        self.generations = Generations(settings, check_binds(settings))
        d = settings.daemon
        self.admission = Admission(d.slots, d.queue)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=64, thread_name_prefix="ridgeline-request"
        )
        self.metrics = DaemonMetrics(lambda: self.agent, self.admission)
        self.dispatcher = Dispatcher(
            lambda: self.agent,
            self.admission,
            self._executor,
            self.metrics.record,
            lambda: self.metrics.record_error("cancelled"),
        )
        self.upkeep = Upkeep(self.generations, self.admission, self.dispatcher, reload, out)
        self._doors = Doors()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def agent(self) -> EdgeAgent:
        return self.generations.agent

    @property
    def settings(self) -> EdgeSettings:
        return self.generations.settings

    @property
    def pool(self) -> RuntimePool:
        return self.generations.pool

    @property
    def http_url(self) -> str | None:
        return self._doors.http.url

    @property
    def grpc_target(self) -> str | None:
        return self._doors.grpc.target

    async def start(self) -> None:
        key = lambda: self.generations.key  # noqa: E731  # read per call: a reload changes it
        agent = lambda: self.agent  # noqa: E731
        await self._doors.open(
            self.settings.daemon, agent, self.dispatcher, self.metrics, key, self._out
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        self._spawn(self.upkeep.unload_idle())
        sd_notify("READY=1")
        self._out("ready")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def reload(self) -> None:
        """Read the settings again (SIGHUP): see :class:`~.upkeep.Upkeep`."""
        await self.upkeep.reload()

    async def wait(self) -> None:
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        await self._doors.grpc.leave_rotation()
        await self.upkeep.drain()
        for task in list(self._tasks):
            task.cancel()
        await self._doors.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.generations.close()
        self._out("stopped")


def run(settings: EdgeSettings, reload: Callable[[], EdgeSettings] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""

    async def main() -> None:
        daemon = Daemon(settings, reload=reload, out=lambda line: print(line, flush=True))
        try:
            await daemon.start()
            await daemon.wait()
        finally:
            await daemon.shutdown()

    asyncio.run(main())

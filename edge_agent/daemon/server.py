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
import logging
from collections.abc import Callable

from ridgeline_core.runtime import RuntimePool

from ..agent import EdgeAgent
from ..settings import EdgeSettings
from .background import Background
from .generations import Generations
from .listeners import Doors
from .serving import Serving
from .sockets import prepare_socket
from .upkeep import Upkeep, check_binds, sd_notify

_prepare_socket = prepare_socket  # the name tests know it by

__all__ = ["Daemon", "check_binds", "run", "sd_notify"]

log = logging.getLogger(__name__)


class Daemon:
    """``edge-agent serve``: the doors (:mod:`.listeners`), the agent and its replacements
    (:mod:`.generations`), what a request passes through (:mod:`.serving`), and the
    lifetime: start, SIGHUP reload, idle unloading, SIGTERM drain."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        reload: Callable[[], EdgeSettings] | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self._out = out
        self.generations = Generations(settings, check_binds(settings))
        self.serving = Serving(lambda: self.agent, settings.daemon)
        self.admission, self.metrics = self.serving.admission, self.serving.metrics
        self.dispatcher = self.serving.dispatcher
        self.upkeep = Upkeep(self.generations, self.serving.in_flight, reload, out)
        self._doors = Doors()
        self._background = Background()

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

    async def start(self, *, signals: bool = True) -> None:
        """Open the doors; ``signals``: handle SIGTERM/SIGINT/SIGHUP (only the main thread
        may, so a daemon embedded on another thread goes without)."""
        await self._doors.open(self.generations, self.dispatcher, self.metrics, self._out)
        if signals:
            self._background.on_signals(self.reload)
        self._background.spawn(self.upkeep.unload_idle())
        sd_notify("READY=1")
        self._out("ready")

    async def reload(self) -> None:
        """Read the settings again (SIGHUP): see :class:`~.upkeep.Upkeep`."""
        await self.upkeep.reload()

    async def wait(self) -> None:
        await self._background.stopping.wait()

    def stop(self) -> None:
        self._background.stopping.set()

    async def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        await self._doors.grpc.leave_rotation()
        await self.upkeep.drain()
        self._background.cancel()
        await self._doors.close()
        self.serving.close()
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

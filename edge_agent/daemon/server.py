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
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from ridgeline_core.errors import ConfigError
from ridgeline_core.runtime import RuntimePool

from ..agent import EdgeAgent
from ..settings import EdgeSettings
from .dispatch import Admission, Dispatcher
from .generations import Generations
from .grpc_api import EdgeService
from .listeners import GrpcListener, HttpListener
from .metrics import DaemonMetrics
from .sockets import prepare_socket

_prepare_socket = prepare_socket  # the name tests know it by

__all__ = ["Daemon", "run"]

log = logging.getLogger(__name__)


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) about a state change; nothing without $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(state.encode())


def check_binds(settings: EdgeSettings) -> str | None:
    """The API key, read once; ConfigError when a public bind has none."""
    d = settings.daemon
    key = d.read_api_key()
    public = d.public_binds()
    if public and key is None:
        raise ConfigError(
            f"{' and '.join(public)} is reachable from other machines: set daemon.api_key "
            "or daemon.api_key_file (clients then send 'Authorization: Bearer KEY'), "
            "or bind a loopback address such as 127.0.0.1"
        )
    return key


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
        self._reload = reload
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
        self._http, self._grpc = HttpListener(), GrpcListener()
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
        return self._http.url

    @property
    def grpc_target(self) -> str | None:
        return self._grpc.target

    async def start(self) -> None:
        d = self.settings.daemon
        if not d.http and not d.grpc:
            raise ConfigError("daemon.http and daemon.grpc are both empty: nothing to serve")
        key = lambda: self.generations.key  # noqa: E731  # read per call: a reload changes it
        if d.http:
            url = await self._http.start(
                d.http, lambda: self.agent, self.dispatcher, self.metrics, key,
                d.max_request_bytes,
            )  # fmt: skip
            self._out(f"http listening on {url}")
        if d.grpc:
            service = EdgeService(lambda: self.agent, self.dispatcher, self.metrics.record_error)
            self._out(f"grpc listening on {await self._grpc.start(d.grpc, service, key)}")
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        self._spawn(self._unload_idle())
        sd_notify("READY=1")
        self._out("ready")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _unload_idle(self) -> None:
        while True:
            idle_s = self.settings.daemon.idle_unload_s
            await asyncio.sleep(min(30.0, max(0.2, idle_s / 4)) if idle_s else 30.0)
            try:
                if idle_s:
                    for name in await asyncio.to_thread(self.pool.unload_idle, idle_s):
                        log.info("unloaded %s after %.0f s unused", name, idle_s)
                await self.generations.close_retired(self.dispatcher.serving)
            except Exception:  # keep unloading later; one failure is no reason to stop
                log.exception("unloading idle models failed")

    async def reload(self) -> None:
        """Read the settings again (SIGHUP): see :class:`~.generations.Generations`."""
        if self._reload is None:
            return
        sd_notify("RELOADING=1")
        old = self.settings
        try:
            new = await asyncio.to_thread(self._reload)
            await self.generations.replace(new, check_binds(new))
        except Exception as exc:
            log.error("reload failed, keeping the current settings: %s", exc)
            self._out(f"reload failed, keeping the current settings: {exc}")
            sd_notify("READY=1")
            return
        for name in ("http", "grpc", "max_request_bytes"):
            if getattr(new.daemon, name) != getattr(old.daemon, name):
                log.warning("daemon.%s changed: restart the daemon to apply it", name)
        self.admission.resize(new.daemon.slots, new.daemon.queue)
        await self.generations.close_retired(self.dispatcher.serving)
        sd_notify("READY=1")
        self._out("reloaded")

    async def wait(self) -> None:
        await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        await self._grpc.leave_rotation()
        await self._drain()
        for task in list(self._tasks):
            task.cancel()
        await self._grpc.stop()
        await self._http.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        await self.generations.close()
        self._out("stopped")

    async def _drain(self) -> None:
        in_flight = self.admission.in_flight
        if in_flight:
            self._out(f"draining {in_flight} request(s), up to {self.settings.daemon.drain_s} s")
        if await self.dispatcher.drain(self.settings.daemon.drain_s):
            return
        self._out("drain time is up: cancelling the rest")
        self.dispatcher.cancel_all("the daemon is shutting down")
        if not await self.dispatcher.drain(10.0):
            log.warning("requests still running at exit (a model load or broker call)")


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

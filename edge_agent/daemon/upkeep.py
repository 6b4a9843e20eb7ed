"""The daemon's work between requests: unloading idle models and retiring replaced
agents, reloading the settings on SIGHUP, and draining the running requests at shutdown.

A failed reload keeps the running settings (and says why); listen addresses and the body
limit apply only after a restart, which the log says when they change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from ridgeline_core.errors import ConfigError

from ..settings import EdgeSettings
from .generations import Generations
from .inflight import InFlight

__all__ = ["Upkeep", "check_binds", "sd_notify"]

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


@dataclass
class Upkeep:
    """Reload, idle unloading and drain over the daemon's generations and the requests
    in flight."""

    generations: Generations
    in_flight: InFlight
    reload_settings: Callable[[], EdgeSettings] | None
    out: Callable[[str], None]

    async def unload_idle(self) -> None:
        """Forever: unload models unused for ``daemon.idle_unload_s``, close retired agents."""
        while True:
            idle_s = self.generations.settings.daemon.idle_unload_s
            await asyncio.sleep(min(30.0, max(0.2, idle_s / 4)) if idle_s else 30.0)
            try:
                if idle_s:
                    unloaded = await asyncio.to_thread(self.generations.pool.unload_idle, idle_s)
                    for name in unloaded:
                        log.info("unloaded %s after %.0f s unused", name, idle_s)
                await self.generations.close_retired(self.in_flight.serving)
            except Exception:  # keep unloading later; one failure is no reason to stop
                log.exception("unloading idle models failed")

    async def reload(self) -> None:
        """Read the settings again (SIGHUP): see :class:`~.generations.Generations`."""
        if self.reload_settings is None:
            return
        sd_notify("RELOADING=1")
        old = self.generations.settings
        try:
            new = await asyncio.to_thread(self.reload_settings)
            await self.generations.replace(new, check_binds(new))
        except Exception as exc:
            log.error("reload failed, keeping the current settings: %s", exc)
            self.out(f"reload failed, keeping the current settings: {exc}")
            sd_notify("READY=1")
            return
        for name in ("http", "grpc", "max_request_bytes"):
            if getattr(new.daemon, name) != getattr(old.daemon, name):
                log.warning("daemon.%s changed: restart the daemon to apply it", name)
        self.in_flight.admission.resize(new.daemon.slots, new.daemon.queue)
        await self.generations.close_retired(self.in_flight.serving)
        sd_notify("READY=1")
        self.out("reloaded")

    async def drain(self) -> None:
        """Let running requests finish for ``daemon.drain_s``, then cancel the rest."""
        drain_s = self.generations.settings.daemon.drain_s
        admitted = self.in_flight.admission.in_flight
        if admitted:
            self.out(f"draining {admitted} request(s), up to {drain_s} s")
        if await self.in_flight.drain(drain_s):
            return
        self.out("drain time is up: cancelling the rest")
        self.in_flight.cancel_all("the daemon is shutting down")
        if not await self.in_flight.drain(10.0):
            log.warning("requests still running at exit (a model load or broker call)")

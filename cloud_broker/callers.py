"""Who a call is from and what it asks for, and which calls are running.

A call's device is the token's (with auth; a claimed ``device_id`` must match it) or,
without auth, its peer host, so that rate limits key on something a client cannot choose.
:class:`RunningCalls` lets the shutdown refuse new calls and wait for the running ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ridgeline.v1 import broker_pb2
from ridgeline_core import errors

from .auth import check_device_id, current_device

__all__ = ["RunningCalls", "device_of"]


def device_of(request: broker_pb2.GenerateRequest, context: Any, auth: bool) -> str:
    """The device a call counts against (see the module docstring)."""
    authenticated = current_device.get()
    claimed = request.device_id
    if claimed:
        check_device_id(claimed)
    if auth:
        if authenticated is None:  # the interceptor always sets it; never serve anonymously
            raise errors.UnauthenticatedError("missing device token")
        if claimed and claimed != authenticated:
            raise errors.PermissionDeniedError(
                f"device_id {claimed!r} does not match the token's device"
            )
        return authenticated
    # without auth a claimed id is unverified: limits key on where the call comes from
    return _peer_host(context.peer())


class RunningCalls:
    """Generate calls in progress, and whether new ones are refused (shutting down)."""

    def __init__(self) -> None:
        self.draining = False
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def refuse_when_draining(self) -> None:
        if self.draining:
            raise errors.UnavailableError("the broker is shutting down; retry another broker")

    def started(self) -> None:
        self.active += 1
        self._idle.clear()

    def ended(self) -> None:
        self.active -= 1
        if not self.active:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call is running; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True


def _peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:53124`` -> ``ipv4:10.0.0.7``: one device per host, not per connection."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer

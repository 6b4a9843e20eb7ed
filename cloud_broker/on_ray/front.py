"""The broker's gRPC front as a Ray Serve deployment.

Each replica runs the single-process broker's own server (:class:`~cloud_broker.server.
BrokerServer`: TLS and client certificates, device tokens, rate limits, precise status
codes, health, reflection, metrics, deadlines and cancel, bounded writes), with two
things swapped in: the models are :class:`~.remote.RemoteBackend` handles to their
deployments, and the tokens and the rate limit are the ones every front shares
(:mod:`.limits`). docs/architecture.md says why this front and not Serve's gRPC proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..backends import Backend
from ..server import BrokerServer
from ..settings import BrokerSettings, split_host_port
from .limits import SharedRate, SyncedTokens, limits_of, open_keeper, settle_every
from .remote import RemoteBackend
from .replica import ReplicaInfo

__all__ = ["BrokerFront"]

log = logging.getLogger("ridgeline.broker")


class BrokerFront:
    """The body of the front deployment (:func:`cloud_broker.on_ray.app.broker_app`)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self, settings: BrokerSettings, handles: dict[str, Any]
    ) -> None:
        infos: list[ReplicaInfo] = await asyncio.gather(
            *(handle.info.remote() for handle in handles.values())
        )
        backends: dict[str, Backend] = {
            info.name: RemoteBackend(
                handles[info.name], info, settings.ray.model(info.name).most_replicas
            )
            for info in infos
        }
        ray_settings = settings.ray
        limits = limits_of(settings)
        self._keeper = open_keeper(ray_settings.app_name, ray_settings.namespace, limits)
        await self._keeper.configure.remote(*limits)  # a redeploy may have changed them
        tokens = None
        if settings.auth.enabled:
            tokens = SyncedTokens(self._keeper, ray_settings.limits_refresh_s)
            await tokens.sync()
        rate = SharedRate(self._keeper, fronts=ray_settings.fronts, lease_s=ray_settings.lease_s)
        self.server = BrokerServer(
            settings,
            log_line=log.info,
            backends=backends,
            limits=(tokens, rate),
            share_port=ray_settings.fronts_per_node > 1,
        )
        await self.server.start()
        self._tasks = [asyncio.create_task(settle_every(rate))]
        if tokens is not None:
            self._tasks.append(asyncio.create_task(tokens.run()))
        self._address = _reachable(self.server.address)
        metrics = ""
        if self.server.metrics_port is not None:
            host, _ = split_host_port(settings.metrics.listen)
            metrics = f"http://{_reachable(f'{host}:{self.server.metrics_port}')}/metrics"
        await self._keeper.register.remote(self._address, metrics)
        log.info("front listening on %s", self._address)

    def check_health(self) -> None:
        """Serve replaces a front whose limits stopped being kept in step."""
        for task in self._tasks:
            if task.done():
                raise RuntimeError(f"the front's background task ended: {task!r}")

    async def __del__(self) -> None:  # Serve awaits it when the replica stops
        with contextlib.suppress(Exception):
            await self._keeper.unregister.remote(self._address)
        await self.server.stop()  # NOT_SERVING, running streams get server.grace_s
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _reachable(address: str) -> str:
    host, port = split_host_port(address)
    if host in ("0.0.0.0", "::", ""):
        import ray

        host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

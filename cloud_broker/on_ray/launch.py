"""``cloud-broker serve --ray ADDRESS``: deploy the broker on a Ray cluster and keep it
up until SIGTERM or Ctrl-C, then take it down (fronts drain first).

``ADDRESS`` is ``local`` (a Ray started for this command, on this machine), ``auto``
(the cluster this machine belongs to) or ``ray://HOST:10001``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

from ridgeline_core.errors import ConfigError
from ridgeline_core.on_ray import connect_ray, import_ray

from ..server import security, served_names
from ..settings import BrokerSettings

__all__ = ["serve_on_ray"]

_READY_S = 600.0  # models load in their replicas; large ones take a while


def _say(text: str) -> None:
    print(text, flush=True)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _connect(address: str, settings: BrokerSettings) -> Any:
    ray = connect_ray(address, namespace=settings.ray.namespace)
    import_ray("serve")
    from ray import serve

    if address == "local":
        _check_fits(ray.cluster_resources(), settings)
    serve.start(proxy_location="Disabled")  # the fronts are the ingress
    return serve


def _check_fits(resources: dict[str, float], settings: BrokerSettings) -> None:
    """A local Ray does not grow: refuse what its CPUs cannot place."""
    ray = settings.ray
    need = ray.fronts * ray.front_num_cpus
    for name in served_names(settings):
        model = ray.model(name)
        need += model.num_cpus * (model.min_replicas or model.replicas)
    have = resources.get("CPU", 0.0)
    if need > have:
        raise ConfigError(
            f"the broker needs {need:g} CPUs on Ray and this machine has {have:g}: lower "
            "ray.front_num_cpus or ray.models.NAME.num_cpus (they are reservations, not threads)"
        )
    if ray.fronts > ray.fronts_per_node:
        raise ConfigError(
            f"ray.fronts = {ray.fronts} on one machine needs ray.fronts_per_node = {ray.fronts}"
        )


def _wait_fronts(keeper: Any, count: int, since: float) -> list[str]:
    """The fronts that registered since the deployment started (a keeper of an earlier
    run may still list fronts that died without unregistering)."""
    import ray

    deadline = time.monotonic() + 30.0
    while True:
        fronts: list[str] = ray.get(keeper.fronts.remote(since))
        if len(fronts) >= count or time.monotonic() > deadline:
            return fronts
        time.sleep(0.1)


def serve_on_ray(settings: BrokerSettings, address: str, *, mode: str) -> None:
    from .app import broker_app
    from .limits import limits_of, open_keeper

    app = broker_app(settings)  # checks the transport before anything starts
    serve = _connect(address, settings)
    import ray

    name = settings.ray.app_name
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    keeper = open_keeper(name, settings.ray.namespace, limits_of(settings))
    since = time.time()
    try:
        _log(f"deploying {name} on Ray ({', '.join(served_names(settings))})")
        try:
            serve.run(app, name=name, route_prefix=None, blocking=False)
        except RuntimeError as exc:  # a deployment failed: its replicas' error is in it
            raise ConfigError(f"the broker did not start on Ray: {exc}") from None
        for front in _wait_fronts(keeper, settings.ray.fronts, since):
            _say(f"listening on {front} ({mode} on Ray, {security(settings)})")
        for url in ray.get(keeper.metrics.remote(since)):
            _say(f"metrics on {url}")
        _say(f"serving {', '.join(sorted(served_names(settings)))}")
        stop.wait()
        _log(f"shutting down: fronts drain for up to {settings.server.grace_s:g} s")
    finally:
        _teardown(serve, name, keeper)
    _log("stopped")


def _teardown(serve: Any, name: str, keeper: Any) -> None:
    import ray

    try:
        serve.delete(name)
    except Exception as exc:  # the cluster went away: nothing left to take down
        _log(f"could not delete the application {name}: {exc}")
    try:
        ray.kill(keeper)
    except Exception as exc:
        _log(f"could not stop the shared limits of {name}: {exc}")
    ray.shutdown()

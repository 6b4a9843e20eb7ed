"""Joining Ray, the one way every ``--ray ADDRESS`` option does it (``edge-agent calibrate``
and ``eval``, ``cloud-broker serve`` and ``router train``).

``ADDRESS`` is ``local`` (a Ray started for this process), ``auto`` (the cluster this
machine belongs to), ``HOST:PORT`` (a cluster's GCS) or ``ray://HOST:PORT`` (Ray Client).
An address that answers nothing is refused within seconds: Ray itself retries a dead
address for minutes before it gives up. Importing this module imports no Ray.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, MissingDependencyError

__all__ = ["RayPool", "connect_ray", "import_ray", "joined_ray", "on_actors"]

_PROBE_S = 5.0


def import_ray(*parts: str) -> Any:
    """The ``ray`` module (and ``ray.<part>`` imported), or MissingDependencyError."""
    try:
        import importlib

        import ray

        for part in parts:
            importlib.import_module(f"ray.{part}")
    except ImportError:
        raise MissingDependencyError.for_module("ray", "ray") from None
    return ray


@dataclass(frozen=True)
class RayPool:
    """Where and how wide a Ray Data job runs: Ray's address and the number of actors
    (each holds one model copy)."""

    address: str
    actors: int = 2


@contextlib.contextmanager
def joined_ray(address: str) -> Iterator[Any]:
    """The ``ray`` module, joined to ``address`` for the block and left after it; a Ray
    this process already joined is used as is (and stays joined)."""
    ray = import_ray("data")
    started_here = not ray.is_initialized()
    if started_here:
        connect_ray(address)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def on_actors(ray: Any, count: int, actor: type, args: tuple[Any, ...], actors: int) -> Any:
    """Rows ``{"index": i}`` for ``i < count``, mapped one at a time by a pool of
    ``actors`` instances of ``actor(*args)`` (each built once: a model loaded once); the
    rows they return, to iterate (``iter_rows``)."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.from_items([{"index": i} for i in range(count)])
    return dataset.map_batches(
        actor, fn_constructor_args=args, concurrency=actors, batch_size=1, batch_format="numpy"
    )


def connect_ray(address: str, *, namespace: str | None = None) -> Any:
    """``ray.init`` for ``address``; ConfigError when it cannot be reached."""
    ray = import_ray()
    if address not in ("local", "auto"):
        _probe(address)
    try:
        if address == "local":
            ray.init(
                namespace=namespace,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            ray.init(
                address=address, namespace=namespace, log_to_driver=False, configure_logging=False
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot reach Ray at {address!r}: {exc}") from exc
    return ray


def _probe(address: str) -> None:
    """A TCP connection to ``address``'s host and port, or ConfigError at once."""
    where = address.removeprefix("ray://")
    host, sep, port = where.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"Ray address {address!r}: use local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=_PROBE_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot reach Ray at {address!r}: {exc.strerror or exc} (is the cluster up, "
            "and is that its GCS or Ray Client port?)"
        ) from None

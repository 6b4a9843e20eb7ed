"""Joining Ray, the one way every ``--ray ADDRESS`` option does it (``edge-agent calibrate``
and ``eval``, ``cloud-broker serve`` and ``router train``).

``ADDRESS`` is ``local`` (a Ray started for this process), ``auto`` (the cluster this
machine belongs to), ``HOST:PORT`` (a cluster's GCS) or ``ray://HOST:PORT`` (Ray Client).
An address that answers nothing is refused within seconds: Ray itself retries a dead
address for minutes before it gives up. Importing this module imports no Ray.
"""

from __future__ import annotations

import socket
from typing import Any

from .errors import ConfigError, MissingDependencyError

__all__ = ["connect_ray", "import_ray"]

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

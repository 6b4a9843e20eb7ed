"""Device telemetry sources by name, so settings can list them (``telemetry.sources``).

Each source module registers a factory that builds the source with its production
defaults; tests construct the classes directly with fake sysfs roots instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ridgeline_core.errors import ConfigError

from .snapshot import TelemetrySource

__all__ = ["DEVICE_SOURCES", "SourceFactory", "device_sources", "register_source", "source_names"]

SourceFactory = Callable[[], TelemetrySource]
_F = TypeVar("_F", bound=SourceFactory)

# default order; a later source's value overrides an earlier one's for the same field
DEVICE_SOURCES: tuple[str, ...] = (
    "psutil",
    "power_supply",
    "thermal_zone",
    "jetson",
    "raspberry_pi",
)

_FACTORIES: dict[str, SourceFactory] = {}


def register_source(name: str) -> Callable[[_F], _F]:
    """Register a no-argument factory (often the source class itself) under ``name``."""

    def decorate(factory: _F) -> _F:
        _FACTORIES[name] = factory
        return factory

    return decorate


def source_names() -> list[str]:
    return sorted(_FACTORIES)


def device_sources(names: Sequence[str]) -> list[TelemetrySource]:
    """Build the named sources, in order. Unknown names are a configuration mistake."""
    unknown = [name for name in names if name not in _FACTORIES]
    if unknown:
        raise ConfigError(
            f"unknown telemetry source {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(source_names())})"
        )
    return [_FACTORIES[name]() for name in names]

"""Battery, CPU load and temperatures through psutil, where the platform offers them.

psutil is optional (the ``edge`` extra): without it this source reads nothing. Each field
is read on its own, so a platform without one sensor (no battery on a desktop, no
``sensors_temperatures`` on macOS or Windows) still gives the others.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
from collections.abc import Callable
from typing import Any

from .registry import register_source
from .snapshot import Reading

__all__ = ["PsutilSource"]

# what a missing or broken sensor raises on the platforms psutil supports
_SENSOR_ERRORS = (OSError, AttributeError, NotImplementedError)


def _import_psutil() -> Any | None:
    try:
        return importlib.import_module("psutil")
    except ImportError:
        return None


@register_source("psutil")
class PsutilSource:
    name = "psutil"

    def __init__(self, loader: Callable[[], Any | None] = _import_psutil) -> None:
        self._loader = loader
        self._module: Any | None = None
        self._loaded = False
        # psutil.cpu_percent(interval=None) keeps its previous sample per thread, so its
        # first call in each thread returns a meaningless 0.0
        self._primed: set[int] = set()
        self._process: Any | None = None

    def read(self) -> Reading:
        ps = self._psutil()
        if ps is None:
            return {}
        reading: dict[str, float | bool | None] = {}
        reading.update(battery_reading(ps))
        reading.update(self._cpu(ps))
        reading.update(temperature_reading(ps))
        return reading

    def _psutil(self) -> Any | None:
        if not self._loaded:
            self._module = self._loader()
            self._loaded = True
        return self._module

    def _cpu(self, ps: Any) -> Reading:
        """CPU load from *other* processes: the agent's own inference keeps the CPU busy
        while it generates, and must not read as a reason to escalate."""
        try:
            thread = threading.get_ident()
            if thread in self._primed:
                system = ps.cpu_percent(interval=None) / 100.0
                return {"cpu_load": min(1.0, max(0.0, system - self._own_load(ps)))}
            ps.cpu_percent(interval=None)
            self._own_load(ps)
            self._primed.add(thread)
            # until the next call can measure, the 1-minute load average per CPU stands in
            return {"cpu_load": min(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))}
        except _SENSOR_ERRORS:
            return {}

    def _own_load(self, ps: Any) -> float:
        """This process's share of all CPUs since the last call, 0..1 (0 where unknown)."""
        try:
            if self._process is None:
                self._process = ps.Process()
            own = self._process.cpu_percent(interval=None) / 100.0
            return float(own) / (ps.cpu_count() or 1)
        except (*_SENSOR_ERRORS, TypeError):
            return 0.0


def battery_reading(ps: Any) -> Reading:
    try:
        battery = ps.sensors_battery()
    except _SENSOR_ERRORS:
        return {}
    if battery is None:  # no battery: a desktop, a board, a VM
        return {}
    plugged = battery.power_plugged
    return {
        "battery_percent": min(100.0, max(0.0, float(battery.percent))),
        "power_plugged": None if plugged is None else bool(plugged),
    }


def temperature_reading(ps: Any) -> Reading:
    try:
        sensors = ps.sensors_temperatures()  # AttributeError on macOS and Windows
    except _SENSOR_ERRORS:
        return {}
    currents = [
        float(entry.current)
        for entries in sensors.values()
        for entry in entries
        if entry.current is not None and math.isfinite(entry.current)
    ]
    return {"temperature_c": max(currents)} if currents else {}

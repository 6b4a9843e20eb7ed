"""The hottest Linux thermal zone (``/sys/class/thermal/thermal_zone*/temp``).

Cheap and independent of psutil, so boards without it (or with a trimmed Python) still
report heat; psutil's ``sensors_temperatures`` covers hwmon sensors the zones may not.
"""

from __future__ import annotations

from pathlib import Path

from ._sysfs import read_number
from .registry import register_source
from .snapshot import Reading

__all__ = ["ThermalZoneSource"]

# some drivers report a disabled zone as a huge or below-absolute-zero value
_PLAUSIBLE_C = (-60.0, 200.0)


@register_source("thermal_zone")
class ThermalZoneSource:
    name = "thermal_zone"

    def __init__(self, root: Path = Path("/sys/class/thermal")) -> None:
        self.root = root

    def read(self) -> Reading:
        try:
            files = sorted(self.root.glob("thermal_zone*/temp"))
        except OSError:
            return {}
        low, high = _PLAUSIBLE_C
        temperatures = [
            millidegrees / 1000.0
            for path in files
            if (millidegrees := read_number(path)) is not None
            and low <= millidegrees / 1000.0 <= high
        ]
        return {"temperature_c": max(temperatures)} if temperatures else {}

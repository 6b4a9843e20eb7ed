"""Battery charge and power source from Linux sysfs (``/sys/class/power_supply``).

Laptops and many boards expose their batteries and adapters here; psutil reads the same
files on Linux, but this source also works without psutil and knows the USB-C adapter
types and peripheral batteries (a wireless mouse's battery is not the device's).
"""

from __future__ import annotations

from pathlib import Path

from ._sysfs import read_number, read_text
from .registry import register_source
from .snapshot import Reading

__all__ = ["PowerSupplySource"]

# adapters whose ``online`` says whether they feed the device; other types (Battery, UPS,
# Wireless chargers of peripherals) are not counted as adapters
_ADAPTER_TYPES = frozenset(
    {"Mains", "USB", "USB_C", "USB_PD", "USB_PD_DRP", "USB_DCP", "USB_CDP", "USB_ACA", "BrickID"}
)
_CHARGING = frozenset({"Charging", "Full"})


def _capacity(battery: Path) -> float | None:
    """Percent charged: ``capacity``, else energy or charge now/full."""
    capacity = read_number(battery / "capacity")
    if capacity is not None:
        return min(100.0, max(0.0, capacity))
    for now, full in (("energy_now", "energy_full"), ("charge_now", "charge_full")):
        have, most = read_number(battery / now), read_number(battery / full)
        if have is not None and most:
            return min(100.0, max(0.0, 100.0 * have / most))
    return None


@register_source("power_supply")
class PowerSupplySource:
    name = "power_supply"

    def __init__(self, root: Path = Path("/sys/class/power_supply")) -> None:
        self.root = root

    def read(self) -> Reading:
        try:
            supplies = sorted(p for p in self.root.iterdir() if p.is_dir())
        except OSError:
            return {}
        capacities: list[float] = []
        statuses: set[str] = set()
        adapters: list[bool] = []
        for supply in supplies:
            kind = read_text(supply / "type")
            if kind == "Battery" and read_text(supply / "scope") != "Device":
                capacity = _capacity(supply)
                if capacity is not None:
                    capacities.append(capacity)
                statuses.add(read_text(supply / "status") or "")
            elif kind in _ADAPTER_TYPES:
                online = read_text(supply / "online")
                if online is not None:
                    adapters.append(online == "1")
        reading: dict[str, float | bool | None] = {}
        if capacities:
            reading["battery_percent"] = sum(capacities) / len(capacities)
        plugged = _plugged(adapters, statuses)
        if plugged is not None:
            reading["power_plugged"] = plugged
        return reading


def _plugged(adapters: list[bool], statuses: set[str]) -> bool | None:
    """An online adapter is the best evidence; then what the batteries are doing."""
    if any(adapters) or statuses & _CHARGING:
        return True
    if "Discharging" in statuses or adapters:
        return False
    return None

"""Board power draw from the INA3221 monitors on NVIDIA Jetson modules.

Two sysfs layouts exist: JetPack 5 and later expose hwmon devices named ``ina3221`` with
``in{N}_input`` (bus mV) and ``curr{N}_input`` (mA); JetPack 4's ``ina3221x`` driver
exposes ``iio:device*/in_power{N}_input`` (mW). When one rail is the module's whole input
(``VDD_IN``, ``POM_5V_IN``) the others are parts of it, so that rail alone is the answer;
otherwise the rails are summed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ._sysfs import read_number, read_text
from .registry import register_source
from .snapshot import Reading

__all__ = ["JetsonPowerSource"]

_TOTAL_RAILS = frozenset({"VDD_IN", "POM_5V_IN"})
_CHANNELS = (1, 2, 3)  # hwmon in4..in7 are shunt voltages and curr4 a sum: not rails
_MAX_IIO_CHANNELS = 8
Rail = tuple[str | None, float]  # (label, watts)


def _hwmon_rails(device: Path) -> Iterator[Rail]:
    if read_text(device / "name") != "ina3221":
        return
    for n in _CHANNELS:
        millivolts = read_number(device / f"in{n}_input")
        milliamps = read_number(device / f"curr{n}_input")
        if millivolts is not None and milliamps is not None:
            yield read_text(device / f"in{n}_label"), millivolts * milliamps / 1e6


def _iio_rails(device: Path) -> Iterator[Rail]:
    for n in range(_MAX_IIO_CHANNELS):
        milliwatts = read_number(device / f"in_power{n}_input")
        if milliwatts is not None:
            yield read_text(device / f"rail_name_{n}"), milliwatts / 1e3


_LAYOUTS = (
    (("hwmon*", "*/hwmon/hwmon*"), _hwmon_rails),
    (("iio:device*", "*/iio:device*"), _iio_rails),
)


@register_source("jetson")
class JetsonPowerSource:
    name = "jetson"

    def __init__(
        self,
        roots: Sequence[Path] = (Path("/sys/bus/i2c/drivers/ina3221x"), Path("/sys/class/hwmon")),
    ) -> None:
        self.roots = tuple(roots)

    def read(self) -> Reading:
        rails = list(self._rails())
        if not rails:
            return {}
        totals = [watts for label, watts in rails if label in _TOTAL_RAILS]
        return {"power_w": sum(totals) if totals else sum(watts for _, watts in rails)}

    def _rails(self) -> Iterator[Rail]:
        seen: set[Path] = set()  # one chip is reachable through several roots
        for root in self.roots:
            for patterns, rails in _LAYOUTS:
                for pattern in patterns:
                    for device in sorted(_glob(root, pattern)):
                        real = device.resolve()
                        if real not in seen:
                            seen.add(real)
                            yield from rails(device)


def _glob(root: Path, pattern: str) -> list[Path]:
    try:
        return list(root.glob(pattern))
    except OSError:
        return []

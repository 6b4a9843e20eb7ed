"""Device and in-process telemetry: what the threshold policy knows about this device.

Sources (sysfs, psutil, Jetson power rails, a Raspberry Pi's throttling, replayed traces)
each give a partial reading; :class:`TelemetrySampler` keeps one merged, immutable
:class:`Telemetry` snapshot ready for the request path. Importing this package registers
the device sources by name and does nothing else: no threads, files or psutil import.
"""

from __future__ import annotations

from .jetson import JetsonPowerSource
from .power_supply import PowerSupplySource
from .psutil_source import PsutilSource
from .raspberry_pi import RaspberryPiThrottleSource
from .registry import DEVICE_SOURCES, SourceFactory, device_sources, register_source, source_names
from .replay import ReplaySource, StepReplaySource, TelemetryTrace
from .sampler import TelemetrySampler
from .snapshot import BOOL_FIELDS, FIELDS, Reading, Telemetry, TelemetrySource, merge
from .thermal_zone import ThermalZoneSource

__all__ = [
    "BOOL_FIELDS",
    "DEVICE_SOURCES",
    "FIELDS",
    "JetsonPowerSource",
    "PowerSupplySource",
    "PsutilSource",
    "RaspberryPiThrottleSource",
    "Reading",
    "ReplaySource",
    "SourceFactory",
    "StepReplaySource",
    "Telemetry",
    "TelemetrySampler",
    "TelemetrySource",
    "TelemetryTrace",
    "ThermalZoneSource",
    "device_sources",
    "merge",
    "register_source",
    "source_names",
]

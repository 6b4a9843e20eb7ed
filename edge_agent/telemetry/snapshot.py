"""What the device knows about itself at one moment: one immutable snapshot.

Every field may be ``None``: a source that does not exist here (no battery on a desktop,
no temperatures on macOS, no broker configured) leaves its fields unset, and the threshold
policy treats an unset field as neutral. Sources produce partial readings (a mapping from
field name to value); :func:`merge` folds them into one :class:`Telemetry`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, get_args, get_type_hints

__all__ = ["BOOL_FIELDS", "FIELDS", "Reading", "Telemetry", "TelemetrySource", "merge"]

Reading = Mapping[str, float | bool | None]


@dataclass(frozen=True)
class Telemetry:
    taken_at: float = 0.0  # time.time() of the newest reading in it
    battery_percent: float | None = None  # 0..100
    power_plugged: bool | None = None  # True on mains power
    cpu_load: float | None = None  # 0..1, load from other processes, recent average
    temperature_c: float | None = None  # the hottest sensor
    throttled: bool | None = None  # the board is slowing itself (heat, undervoltage)
    power_w: float | None = None  # measured board power draw (Jetson INA3221 rails)
    local_tokens_per_s: float | None = None  # measured decode speed of the local model (EWMA)
    local_ttft_s: float | None = None  # measured local time to first token (EWMA)
    broker_rtt_s: float | None = None  # broker round trip (EWMA of calls and probes)
    broker_available: bool | None = None  # False when the broker is known down
    budget_left: float | None = None  # fraction of the tightest escalation budget left, 0..1
    sources: tuple[str, ...] = ()  # names of the sources that contributed a value

    def values(self) -> dict[str, Any]:
        """The fields that are set, without ``taken_at`` and ``sources``."""
        return {name: value for name in FIELDS if (value := getattr(self, name)) is not None}


FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Telemetry) if f.name not in ("taken_at", "sources")
)

# the yes/no fields, told apart from the numeric ones by their annotation (trace parsing)
BOOL_FIELDS: frozenset[str] = frozenset(
    name
    for name, hint in get_type_hints(Telemetry).items()
    if name in FIELDS and bool in get_args(hint)
)


class TelemetrySource(Protocol):
    """One place readings come from. ``read`` is called from the sampler's thread, must not
    raise for a missing sensor (return an empty mapping), and should take milliseconds."""

    name: str

    def read(self) -> Reading: ...


def merge(readings: Iterable[tuple[str, Reading]], taken_at: float) -> Telemetry:
    """Fold ``(source name, reading)`` pairs into one snapshot; a later source's value
    overrides an earlier one's for the same field, ``None`` never overrides."""
    values: dict[str, Any] = {}
    sources: list[str] = []
    for name, reading in readings:
        contributed = False
        for key, value in reading.items():
            if value is None or key not in _FIELD_SET:
                continue
            values[key] = value
            contributed = True
        if contributed and name not in sources:
            sources.append(name)
    return Telemetry(taken_at=taken_at, sources=tuple(sources), **values)


_FIELD_SET = frozenset(FIELDS)

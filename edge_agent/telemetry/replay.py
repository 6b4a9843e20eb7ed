"""Telemetry replayed from a trace file, so scenarios (a battery running down, a board
heating up, the broker going away) can be reproduced without the hardware.

A trace is JSONL (one object per line) or CSV (a header row). Every row has ``t``, seconds
from the start, non-decreasing, and any subset of the :data:`FIELDS`; a field a row leaves
out is unset for that row (neutral), it is not carried over from earlier rows. Mistakes are
:class:`~ridgeline_core.errors.ConfigError` (the trace is named by a flag or setting) with
``file:line`` in the message.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

from ridgeline_core.errors import ConfigError

from .snapshot import BOOL_FIELDS, FIELDS, Reading

__all__ = ["MAX_BYTES", "MAX_ROWS", "ReplaySource", "StepReplaySource", "TelemetryTrace"]

MAX_ROWS = 100_000
MAX_BYTES = 16 * 1024 * 1024

TraceRow = dict[str, float | bool]
_Raw = object  # a JSON value or a CSV cell

_KNOWN = ("t", *FIELDS)
_INF = math.inf
# values outside these are mistakes in the trace, not telemetry the policy should see
_RANGES: dict[str, tuple[float, float]] = {
    "t": (0.0, _INF),
    "battery_percent": (0.0, 100.0),
    "cpu_load": (0.0, 1.0),
    "budget_left": (0.0, 1.0),
    "power_w": (0.0, _INF),
    "local_tokens_per_s": (0.0, _INF),
    "local_ttft_s": (0.0, _INF),
    "broker_rtt_s": (0.0, _INF),
}
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _bad(where: object, what: str) -> ConfigError:
    return ConfigError(f"telemetry trace {where}: {what}")


def _number(field: str, raw: _Raw, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _bad(where, f"{field} must be a number, not {raw!r}")
    try:
        value = float(raw)
    except ValueError:
        raise _bad(where, f"{field} must be a number, not {raw!r}") from None
    low, high = _RANGES.get(field, (-_INF, _INF))
    if not (math.isfinite(value) and low <= value <= high):
        raise _bad(where, f"{field} = {raw!r} is outside [{low:g}, {high:g}]")
    return value


def _boolean(field: str, raw: _Raw, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
        return raw.lower() in _TRUE
    raise _bad(where, f"{field} must be true/false, 1/0 or yes/no, not {raw!r}")


def _value(field: str, raw: _Raw, where: str) -> float | bool | None:
    if isinstance(raw, str):
        raw = raw.strip()
    if raw is None or raw == "":  # JSON null or an empty CSV cell: unset
        return None
    return _boolean(field, raw, where) if field in BOOL_FIELDS else _number(field, raw, where)


class _RowBuilder:
    """Validates rows one by one: known fields, ``t`` present and non-decreasing, a cap."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, TraceRow]] = []

    def add(self, fields: Mapping[str, _Raw], where: str) -> None:
        unknown = [key for key in fields if key not in _KNOWN]
        if unknown:
            raise _bad(where, f"unknown field {unknown[0]!r} (known: {', '.join(_KNOWN)})")
        if _value("t", fields.get("t"), where) is None:
            raise _bad(where, "missing t (seconds from the start)")
        t = _number("t", fields["t"], where)
        if self.rows and t < self.rows[-1][0]:
            raise _bad(where, f"t = {t:g} is before the previous row's {self.rows[-1][0]:g}")
        if len(self.rows) >= MAX_ROWS:
            raise _bad(where, f"more than {MAX_ROWS} rows")
        row: TraceRow = {}
        for field in FIELDS:
            if (value := _value(field, fields.get(field), where)) is not None:
                row[field] = value
        self.rows.append((t, row))


def _parse_jsonl(text: str, path: Path) -> list[tuple[float, TraceRow]]:
    rows = _RowBuilder()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(where, f"not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise _bad(where, "each line must be a JSON object")
        rows.add(data, where)
    return rows.rows


def _parse_csv(text: str, path: Path) -> list[tuple[float, TraceRow]]:
    rows = _RowBuilder()
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    try:
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = _header(cells, where)
            elif len(cells) != len(header):
                raise _bad(where, f"{len(cells)} cells, the header has {len(header)}")
            else:
                rows.add(dict(zip(header, cells, strict=True)), where)
    except csv.Error as exc:
        raise _bad(f"{path}:{reader.line_num}", f"not valid CSV ({exc})") from None
    return rows.rows


def _header(cells: Sequence[str], where: str) -> list[str]:
    names = [cell.strip() for cell in cells]
    unknown = [name for name in names if name not in _KNOWN]
    if unknown:
        raise _bad(where, f"unknown column {unknown[0]!r} (known: {', '.join(_KNOWN)})")
    if len(set(names)) != len(names):
        raise _bad(where, "a column is named twice")
    if "t" not in names:
        raise _bad(where, "no t column (seconds from the start)")
    return names


_Parser = Callable[[str, Path], list[tuple[float, TraceRow]]]
_PARSERS: dict[str, _Parser] = {"jsonl": _parse_jsonl, "csv": _parse_csv}
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}


def _format(path: Path, text: str) -> str:
    """By suffix, else by content: a JSONL trace starts with ``{``."""
    known = _SUFFIXES.get(path.suffix.lower())
    if known is not None:
        return known
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise _bad(path, f"{size} bytes, more than the {MAX_BYTES} allowed")
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _bad(path, "not found") from None
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text") from None
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror or exc})") from None


class TelemetryTrace:
    """Rows of ``(t, fields)`` in time order; ``at`` answers the row in force at a time."""

    def __init__(
        self, rows: Iterable[tuple[float, Mapping[str, float | bool]]], path: Path | None = None
    ) -> None:
        self.rows: list[tuple[float, TraceRow]] = [(float(t), dict(row)) for t, row in rows]
        self.path = path
        self._times = [t for t, _ in self.rows]
        if not self.rows:
            raise ValueError("a telemetry trace needs at least one row")
        if any(later < earlier for earlier, later in pairwise(self._times)):
            raise ValueError("telemetry trace rows must be in time order")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TelemetryTrace:
        path = Path(path)
        text = _read(path)
        rows = _PARSERS[_format(path, text)](text, path)
        if not rows:
            raise _bad(path, "empty (no rows)")
        return cls(rows, path)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def duration_s(self) -> float:
        """``t`` of the last row."""
        return self._times[-1]

    def at(self, elapsed_s: float) -> TraceRow:
        """The row with the greatest ``t`` at or before ``elapsed_s`` (the first row before
        the trace starts, the last one after it ends)."""
        index = max(0, bisect_right(self._times, elapsed_s) - 1)
        return dict(self.rows[index][1])


class ReplaySource:
    """Replays a trace in real time, from when this source was made."""

    name = "replay"

    def __init__(self, trace: TelemetryTrace, clock: Callable[[], float] = time.monotonic):
        self.trace = trace
        self._clock = clock
        self._start = clock()

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._start

    @property
    def done(self) -> bool:
        return self.elapsed_s >= self.trace.duration_s

    def read(self) -> Reading:
        return self.trace.at(self.elapsed_s)


class StepReplaySource:
    """Replays a trace one row per step (simulations step once per prompt), ignoring ``t``."""

    name = "replay"

    def __init__(self, trace: TelemetryTrace) -> None:
        self.trace = trace
        self.index = 0

    @property
    def done(self) -> bool:
        """True on the last row: ``advance`` has nowhere further to go."""
        return self.index >= len(self.trace.rows) - 1

    def advance(self) -> bool:
        """Move to the next row; False (staying put) on the last one."""
        if self.done:
            return False
        self.index += 1
        return True

    def read(self) -> Reading:
        return dict(self.trace.rows[self.index][1])

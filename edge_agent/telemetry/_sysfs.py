"""Tolerant readers for sysfs attribute files.

Sensor files come and go with drivers and power states (a disabled INA3221 channel or a
sleeping thermal zone answers ``EAGAIN``/``ENODATA``), so every read here answers ``None``
instead of raising: a missing sensor is normal, not an error.
"""

from __future__ import annotations

import math
from pathlib import Path

__all__ = ["read_number", "read_text"]


def read_text(path: Path) -> str | None:
    """The stripped contents of a small text file, or None when it cannot be read."""
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except (OSError, ValueError):
        return None


def read_number(path: Path) -> float | None:
    """A file holding one finite decimal number, or None."""
    text = read_text(path)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None

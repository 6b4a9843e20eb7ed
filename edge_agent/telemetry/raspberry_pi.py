"""Whether a Raspberry Pi is throttling now, from the firmware's throttled bitmask.

Bits 0-3 say what is happening now (under-voltage, frequency capped, throttled, soft
temperature limit); bits 16-19 say it happened since boot, which says nothing about the
next answer, so only the low bits count. The kernel's sysfs file is cheap; ``vcgencmd``
(a process per read) is the fallback on kernels without it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ._sysfs import read_text
from .registry import register_source
from .snapshot import Reading

__all__ = ["RaspberryPiThrottleSource", "run_vcgencmd"]

_NOW_BITS = 0b1111
_SYSFS = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")


def run_vcgencmd(timeout_s: float = 1.0) -> str | None:
    """``vcgencmd get_throttled``'s output, or None without the tool or on failure."""
    tool = shutil.which("vcgencmd")
    if tool is None:
        return None
    try:
        done = subprocess.run(
            [tool, "get_throttled"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_mask(text: str, base: int) -> int | None:
    """``50005``, ``0x50005`` or ``throttled=0x50005`` as an integer, else None."""
    value = text.strip().rpartition("=")[2].strip()
    try:
        return int(value, base)
    except ValueError:
        return None


@register_source("raspberry_pi")
class RaspberryPiThrottleSource:
    name = "raspberry_pi"

    def __init__(
        self,
        sysfs_path: Path = _SYSFS,
        runner: Callable[[], str | None] = run_vcgencmd,
    ) -> None:
        self.sysfs_path = sysfs_path
        self._runner = runner

    def read(self) -> Reading:
        mask = self._mask()
        return {} if mask is None else {"throttled": bool(mask & _NOW_BITS)}

    def _mask(self) -> int | None:
        text = read_text(self.sysfs_path)
        if text:
            # the kernel prints the mask with "%x": hex even without a 0x prefix
            return parse_mask(text, 16)
        output = self._runner()
        return None if output is None else parse_mask(output, 0)

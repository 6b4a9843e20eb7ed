"""How many threads a CPU runtime should use on this machine."""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["default_threads"]


def default_threads() -> int:
    """Physical cores this process may use, within its CPU affinity and cgroup quota.

    Hyperthread siblings share a core's arithmetic units, so llama.cpp decodes no
    faster (often slower) with one thread per logical CPU.
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus is None:
        return os.cpu_count() or 1
    cores: set[str] = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    count = len(cores)
    try:  # cgroup v2 quota, e.g. a container limited to 2 CPUs: "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)

"""How many threads a CPU runtime should use on this machine, and for the next generation
when other processes want the CPU too."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

__all__ = ["default_threads", "threads_for_load"]


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


def threads_for_load(configured: int, others_load: float | None, cores: int | None = None) -> int:
    """Threads for the next generation: ``configured``, less the cores other processes
    keep busy (``others_load``: their share of all CPUs, 0..1, as the telemetry's
    ``cpu_load`` measures it; None keeps ``configured``).

    llama.cpp splits each step between its threads and waits for the slowest; a thread
    that shares its core with a busy process stalls all the others
    (benchmarks/local_generation.py --load measures it).
    """
    if others_load is None:
        return configured
    free = (cores or _cores()) * (1.0 - min(1.0, max(0.0, others_load)))
    return max(1, min(configured, int(free + 0.5)))


@functools.cache
def _cores() -> int:
    """default_threads(), read once: a request must not read sysfs for it."""
    return default_threads()

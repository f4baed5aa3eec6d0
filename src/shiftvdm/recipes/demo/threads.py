"""How many torch threads a small CPU job should use, from the cores other processes keep busy."""

from __future__ import annotations

import os
import time


def choose_threads(requested: int) -> int:
    """``requested``, or 2 threads on an idle machine and 1 on a busy one: these models are so small that a
    second OpenMP thread competing with other processes makes every step 2-3x slower (measured)."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:  # no /proc/stat: the 1-minute load average (it lags: a job that just ended still counts)
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return 2 if cores - busy >= 1.5 else 1  # two threads only when about two cores are free


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores other processes keep busy right now (from /proc/stat over ``seconds``), or None."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / elapsed) if elapsed > 0 else None

"""What else the machine did while a cell was timed: load average, CPU time other processes took, CPU steal.

A latency measured while another process (a test suite, a training job, a noisy VM neighbour) held the cores is a
fact about that moment, not about the variant. The measuring process records this probe around each cell, so a
decision can refuse to compare a cell measured on a busy machine, and say so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil


def _busy(times: Any) -> float:
    """CPU seconds spent working, all cores (Linux folds guest time into user)."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def _own(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _cpu_of(pids: tuple[int, ...]) -> float:
    """CPU seconds of these processes (and their reaped children); one that is gone or hidden counts nothing."""
    total = 0.0
    for pid in pids:
        try:
            total += _own(psutil.Process(pid))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


@dataclass
class LoadProbe:
    """Start before the timed calls, `finish()` after: returns the load the cell ran under.

    `also`: pids whose CPU is part of what is measured, not "other" load (a load test's model server)."""

    also: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self._process = psutil.Process()
        self._wall = time.monotonic()
        self._system = psutil.cpu_times()
        self._self = _own(self._process) + _cpu_of(self.also)

    def finish(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self._wall, 1e-9)
        system = psutil.cpu_times()
        cpus = psutil.cpu_count() or 1
        measured = _own(self._process) + _cpu_of(self.also) - self._self
        others = max(0.0, (_busy(system) - _busy(self._system)) - measured)
        steal = max(0.0, getattr(system, "steal", 0.0) - getattr(self._system, "steal", 0.0))
        return {
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "other_cpu_fraction": round(min(1.0, others / (wall * cpus)), 4),
            "steal_fraction": round(min(1.0, steal / (wall * cpus)), 4),
            "cpus": cpus,
            "seconds": round(wall, 3),
        }

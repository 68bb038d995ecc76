"""Whether a stretch of timing had the cores to itself.

Two figures per stretch, both from the kernel's own counters:
* `cpu_share_frac`: this process's CPU time over wall time x its torch threads. About 1 when its
  threads ran all the time; lower when they waited for the cores (or on Python between kernels).
* `others_busy_frac`: CPU time that other processes spent on the machine's cores over the same
  wall time x the cores this process may use. This is what says "something else competed": a
  second sweep, a test suite, a browser.

A stretch is contended when the others used more than the cores this process left them (the
cores less its own threads: a parallel sweep's sibling job on the other core is expected) plus
`OTHERS_BUSY_MAX` of all cores. Such a stretch's timings are flagged in the record, and no cache
ever keeps a figure measured in one.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.experiments.cores import usable_cores

# Other processes' share of the cores above which a timing is marked contended. An idle Linux
# box spends well under 5% on its own daemons; one busy core of two is 50%.
OTHERS_BUSY_MAX = 0.15


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return None


def _machine_busy_s() -> float | None:
    """Busy CPU seconds since boot of the cores this process may run on, from the per-core lines
    of /proc/stat: work on cores outside its cpuset (other SLURM jobs on the node) is not
    competition."""
    allowed = _allowed_cpus()
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if allowed is not None and int(name[3:]) not in allowed:
            continue
        ticks = [int(x) for x in fields]
        busy += sum(ticks[:8]) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def loadavg_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass
class Share:
    wall_s: float
    cpu_share_frac: float | None
    others_busy_frac: float | None
    free_frac: float = 0.0  # the share of the cores this process left to others (not its threads)

    @property
    def limit(self) -> float:
        return self.free_frac + OTHERS_BUSY_MAX

    @property
    def contended(self) -> bool:
        return self.others_busy_frac is not None and self.others_busy_frac > self.limit

    def reason(self, what: str) -> str | None:
        if not self.contended:
            return None
        return (f"other processes kept {100 * self.others_busy_frac:.0f}% of the cores busy during {what} "
                f"(limit {100 * self.limit:.0f}%)")


class CpuShare:
    """Context manager: the CPU share of the enclosed stretch (see the module docstring)."""

    def __init__(self, threads: int):
        self.threads = max(1, threads)
        self.result: Share | None = None

    def __enter__(self) -> "CpuShare":
        self._wall, self._cpu, self._busy = time.perf_counter(), time.process_time(), _machine_busy_s()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        busy = _machine_busy_s()
        share = cpu / (wall * self.threads) if wall > 0 else None
        others = None
        cores = usable_cores()
        if busy is not None and self._busy is not None and wall > 0.05:
            # the busy time of the cores this run may use, less its own
            others = max(0.0, (busy - self._busy) - cpu) / (wall * cores)
        self.result = Share(wall, share, others, max(0.0, (cores - self.threads) / cores))

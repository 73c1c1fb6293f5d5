"""CPU time of another process, and CPU pinning.

The kernel's per-process CPU clock (`clock_gettime` on the clock id of a pid) is the exact sum of
the run time of all the process's threads, including threads that have ended, in nanoseconds.
`/proc/<pid>/stat` utime+stime is the same quantity rounded down to clock ticks (10 ms here): fine
for a window of a few hundred turns, too coarse for one referral. So the clock is read, and the
ticks are kept as a cross-check (and as the fallback where the clock cannot be read).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_CPUCLOCK_SCHED = 2  # Linux: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) = (~pid << 3) | 2
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def stat_cpu_ns(pid: int) -> int:
    """utime + stime from /proc/<pid>/stat (whole process, ended threads included), in ns."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = handle.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from 1
    return ticks * 1_000_000_000 // _TICKS_PER_SECOND


def _clock_cpu_ns(pid: int) -> int:
    return time.clock_gettime_ns((~pid << 3) | _CPUCLOCK_SCHED)


@dataclass
class ProcessCpu:
    """Reads one process's CPU time; `precise` tells whether the ns clock is used."""

    pid: int
    precise: bool = True

    def __post_init__(self) -> None:
        try:
            _clock_cpu_ns(self.pid)
        except OSError:
            self.precise = False

    def ns(self) -> int:
        """CPU time used so far by every thread of the process, in ns."""
        return _clock_cpu_ns(self.pid) if self.precise else stat_cpu_ns(self.pid)

    def stat_ns(self) -> int:
        """The same from /proc/<pid>/stat (tick resolution), for the cross-check."""
        return stat_cpu_ns(self.pid)


def pick_cpus() -> tuple[int, int] | None:
    """(CPU for the bots, CPU for everything else), or None with fewer than two CPUs to use."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None
    return available[0], available[1]


def pin_self(cpu: int) -> None:
    """Pin the calling process (load generator) to `cpu`; children started later inherit it."""
    os.sched_setaffinity(0, {cpu})

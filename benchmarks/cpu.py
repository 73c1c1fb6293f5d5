"""CPU time of another process, and CPU pinning.

The kernel's per-process CPU clock (`clock_gettime` on the clock id of a pid) is the exact sum of
the run time of all the process's threads, including threads that have ended, in nanoseconds.
`/proc/<pid>/stat` utime+stime is the same quantity rounded down to clock ticks (10 ms here): fine
for a window of a few hundred turns, too coarse for one referral. So the clock is read, and the
ticks are kept as a cross-check (and as the fallback where the clock cannot be read).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Callable
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


# -- the whole machine and process trees (benchmarks.instances, benchmarks.database_growth) ---------------


def _descendants(root: int) -> list[int]:
    """`root` and every process below it (PostgreSQL: runuser, the postmaster, its backends)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        found.append(pid)
        frontier.extend(children.get(pid, []))
    return found


def tree_cpu_ns(root: int) -> dict[int, int]:
    """CPU so far of each process of the tree, by pid, with that of its children that ended (cutime, cstime):
    a backend whose connection closed is counted in the postmaster's."""
    cpu = {}
    for pid in _descendants(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
            cpu[pid] = ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return cpu


def runqueue_wait_ns(pid: int) -> int:
    """Time the process's threads were ready to run but waited for a CPU (`/proc/<pid>/task/*/schedstat`)."""
    waited = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError), \
                    open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as handle:
                waited += int(handle.read().split()[1])
    return waited


def machine_busy_ns() -> int:
    """CPU time all processes used so far, every CPU together (`/proc/stat`, without idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def own_cpu_ns() -> int:
    """This process's CPU so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


async def wait_until_quiet(noisy: float, within: float, log: Callable[[str], None]) -> None:
    """Wait (up to `within` seconds) until the machine uses at most `noisy` of a CPU over 2 s.

    Called between measurements, when the run's own processes are idle: what the machine uses then
    is another job's (on a shared machine), and it would be counted in the next measurement.
    """
    deadline = time.monotonic() + within
    while True:
        before = machine_busy_ns()
        await asyncio.sleep(2)
        busy = (machine_busy_ns() - before) / 2e9
        if busy <= noisy or time.monotonic() > deadline:
            return
        log(f"  the machine is busy ({busy:.0%} of a CPU) with something else; waiting for it to be quiet")
        await asyncio.sleep(10)


"""What the operating system says about this process and machine: load, memory, descriptors.

Linux ``/proc`` is read when it exists; elsewhere the figures that cannot be
known are 0 rather than guessed. Nothing here is on the message path: the API,
Prometheus scrapes and the once-a-second alarm check call it.
"""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Memory:
    total: int  # bytes of RAM of the machine
    used: int  # bytes in use (total minus what the kernel reports available)
    rss: int  # bytes resident for this process


def load_averages() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - platforms without load averages
        return (0.0, 0.0, 0.0)


def memory() -> Memory:
    total = available = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == "MemTotal":
                    total = int(rest.split()[0]) * 1024
                elif key == "MemAvailable":
                    available = int(rest.split()[0]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return Memory(total, max(0, total - available) if total else 0, rss_bytes())


def rss_bytes() -> int:
    """Resident set size of this process now (Linux), else its peak."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def max_fds() -> int:
    """The soft limit on open file descriptors (each connection holds one)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 0


def open_fds() -> int:
    """Open descriptors of this process. Linux 6.2+ reports their number as the size
    of /proc/self/fd: one call, where listing it took 23 ms for 10,000 descriptors,
    mostly holding the GIL that the event loop then waits for (every alarm check)."""
    try:
        size = os.stat("/proc/self/fd").st_size
        return size if size > 0 else len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        return 0


def python_release() -> str:
    return f"Python {sys.version.split()[0]}"


def running_tasks() -> int:
    """Runnable tasks of the machine now (the kernel's run queue, from /proc/loadavg)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


class CpuMeter:
    """Machine CPU use in percent between two readings of /proc/stat."""

    def __init__(self) -> None:
        self._last = _cpu_times()

    def busy(self) -> float:
        """Percent busy since the previous call (or since creation)."""
        now = _cpu_times()
        idle = now[0] - self._last[0]
        total = now[1] - self._last[1]
        self._last = now
        if total <= 0:
            return 0.0
        return round(100.0 * (total - idle) / total, 2)


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return (0, 0)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (idle, sum(fields[:8]))

"""What the benchmarks read of a process from /proc: CPU time and memory.

Shared by the benchmark scripts (imported as a sibling module: a script run as
``python bench/<name>.py`` has bench/ first on its path), so that each figure of
CPU seconds or peak memory in the README is read the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int | str) -> tuple[float, float]:
    """(own utime + stime, reaped children's cutime + cstime) of ``pid``, in seconds."""
    # The command name in parentheses may hold spaces: split after its last ')'.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14])
    return own / TICK, children / TICK


def cpu_seconds(pid: int | str) -> float:
    """Own utime + stime of ``pid``, in seconds."""
    return cpu_times(pid)[0]


def status_kb(pid: int | str, key: str) -> int:
    """A kB line of /proc/PID/status (``VmRSS``, ``VmHWM``, ...); 0 when it has none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0

"""The processes of the local stack, one at a time: start with a log file, wait, stop, reap.

``rtctl.localstack`` decides what runs and in which order; this module knows how
one process of it is handled so that nothing is lost or left behind: its output
goes to its own log file (the ready line is read back from there, so no pipe can
fill up and block it), it runs in its own process group (a terminal's Ctrl-C
reaches rtctl alone, which stops the stack in order), a failure is reported with
the log's path and tail, SIGTERM is followed by SIGKILL after a grace period, and
the simulator's workload processes are checked through ``/proc`` after it exited.

Errors: ``StackError`` (a ``ClusterError``, exit 1): a stack process did not
start, died, or did not stop cleanly.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rtctl.errors import ClusterError

__all__ = ["StackError", "StackProcess", "child_pids", "reap", "spawn", "stop_group", "supports"]

BIN = Path(sys.executable).parent
COMPONENT_ENV = ("RTBENCH_SIM_", "RTBENCH_COLLECTOR_", "RTBENCH_AGENT_")
"""Not passed on: a stack is defined by its settings, not by what the shell exported."""


class StackError(ClusterError):
    """A stack process did not start, died, or did not stop cleanly."""


@dataclass
class StackProcess:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    log_start: int = 0
    """Where this process's output begins in ``log`` (a rerun appends to the same file)."""

    def output(self) -> str:
        """What this process has written so far."""
        with open(self.log, "rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.output().splitlines()[-lines:])
        return ""

    def failure(self, what: str) -> StackError:
        """``NAME WHAT; log: PATH`` and the log's last lines, as an error to raise."""
        tail = self.tail()
        return StackError(f"{self.name} {what}; log: {self.log}" + (f"\n{tail}" if tail else ""))

    def wait_line(
        self, pattern: re.Pattern[str], timeout: float, cancelled: Callable[[], bool]
    ) -> re.Match[str]:
        """The first match of ``pattern`` in the log; StackError if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                match = pattern.search(self.output())
                if match:
                    return match
            code = self.popen.poll()
            if code is not None:
                raise self.failure(f"exited with {code} while starting")
            if cancelled():
                raise StackError(f"start cancelled while waiting for {self.name}")
            if time.monotonic() > deadline:
                raise self.failure(f"printed no ready line within {timeout:.0f} s")
            time.sleep(0.05)


def spawn(name: str, program: str, args: Sequence[str], log_dir: Path) -> StackProcess:
    """Start ``BIN/program ARGS`` with stdout and stderr appended to ``log_dir/NAME.log``."""
    argv = [str(BIN / program), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(COMPONENT_ENV)}
    path = log_dir / f"{name}.log"
    with open(path, "ab") as out:
        start = out.tell()
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, process_group=0,
        )  # fmt: skip
    return StackProcess(name, argv, path, popen, start)


def stop_group(group: Sequence[StackProcess], grace: float) -> list[tuple[StackProcess, str]]:
    """SIGTERM to all of ``group`` at once, then wait; what went wrong, per process.

    A process that had exited before, exits non-zero, or outlives ``grace`` (then
    SIGKILLed) is a problem; a clean exit 0 is not.
    """
    early = {id(p): p.popen.poll() for p in group}
    for proc in group:
        if early[id(proc)] is None:
            proc.popen.send_signal(signal.SIGTERM)
    problems: list[tuple[StackProcess, str]] = []
    for proc in group:
        try:
            code = proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
            problems.append((proc, f"{proc.name} ignored SIGTERM for {grace:.0f} s"))
            continue
        if code != 0:
            when = "before it was stopped" if early[id(proc)] is not None else "on SIGTERM"
            problems.append((proc, f"{proc.name} exited with {code} {when}"))
    return problems


@functools.cache
def supports(program: str, subcommand: str, flag: str) -> bool:
    """Whether the installed ``program [subcommand] --help`` lists ``flag``.

    Asked of the installed command rather than imported: rtctl never imports the
    simulator or the agent (an import-linter contract), and the command is what runs.
    """
    argv = [str(BIN / program), *([subcommand] if subcommand else []), "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return flag in done.stdout


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def child_pids(parent: int) -> dict[int, str]:
    """Processes whose parent is ``parent``: pid → start time (tells a reused pid apart)."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == parent:
            children[int(entry.name)] = fields[19]
    return children


def reap(pids: dict[int, str], within: float = 10.0) -> int:
    """Waits up to ``within`` for ``pids`` (from child_pids) to end; SIGKILLs and counts
    those still there. The workload sets a parent-death signal, so normally none is."""
    deadline = time.monotonic() + within
    alive = dict(pids)
    while True:
        alive = {pid: t for pid, t in alive.items() if _running(pid, t)}
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(alive)


def _running(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"

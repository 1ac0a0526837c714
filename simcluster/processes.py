"""Real workload processes: spawned so that they cannot outlive the simulator.

Each container of a simulated pod is a real process of the workload server, so a
prober gets real TCP answers and real timing. Three rules keep that safe:

- Every child asks the kernel for SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, done by the workload itself at start because
  ``RTBENCH_DIE_WITH_PARENT`` names our pid), so even a SIGKILLed simulator
  leaves no workload behind. The death signal follows the thread that forked,
  which is the event loop's thread here. The child re-checks its parent after
  the prctl call, closing the race with a parent dying during the start.
- Every child gets its own session (process group), so a Ctrl-C on the CLI's
  terminal reaches the simulator only, which then stops its pods in order.
- Exits are watched with a pidfd on the event loop (no thread per child), and a
  child is reaped only by its ``Popen``, so a pid is never signalled after reuse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def exit_code(returncode: int) -> int:
    """A Popen return code as a container exit code (killed by signal N → 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


class WorkloadProcess:
    """One running workload; ``exited`` resolves with its container exit code."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, started_ns: int) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.started_ns = started_ns
        self.finished_ns: int | None = None
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = loop.create_future()
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # pragma: no cover - kernels before 5.3
            loop.call_later(0.05, self._poll)
        else:
            loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        returncode = self.popen.poll()
        if returncode is None:  # pragma: no cover - pidfd readable means it exited
            return
        self._finish(returncode)

    def _poll(self) -> None:  # pragma: no cover - kernels before 5.3
        returncode = self.popen.poll()
        if returncode is None:
            asyncio.get_running_loop().call_later(0.05, self._poll)
        else:
            self._finish(returncode)

    def _finish(self, returncode: int) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self.finished_ns = time.time_ns()
        if not self.exited.done():
            self.exited.set_result(exit_code(returncode))

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process group, unless the process is already gone."""
        if self.exited.done() or self.popen.returncode is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    async def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code."""
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout=max(0.0, grace))
            except TimeoutError:
                self.signal(signal.SIGKILL)
        return await asyncio.shield(self.exited)

    def rss_bytes(self) -> int:
        """The process's resident memory, 0 once it is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0


def spawn(
    binary: Path, address: str, port: int, env: Mapping[str, str], log_path: Path
) -> WorkloadProcess:
    """Start the workload bound to ``address:port``, output appended to ``log_path``.

    Raises OSError when the binary is missing or not executable.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            [str(binary), "-a", address, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            # The workload sets its own parent-death signal (see workload/server.c):
            # a preexec_fn would run Python between fork and exec, which can crash a
            # multi-threaded parent (a gRPC server in the same process, say).
            env={**env, "RTBENCH_DIE_WITH_PARENT": str(os.getpid())},
            close_fds=True,
            start_new_session=True,
        )
    log.debug("spawned pid %d on %s:%d", popen.pid, address, port)
    return WorkloadProcess(popen, log_path, time.time_ns())

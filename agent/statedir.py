"""One live agent per state directory: an exclusive lock held for the process's life.

The state directory holds the agent's identity (``agent-id``) and its spool.
Two agents sharing one (two ``agent run`` on a host, both with the default
``--state-dir``) would share the identity and the spool: the collector would see
one agent, acknowledge half of all batches as duplicates and drop one node's
events without an error. So the first agent takes an exclusive ``flock`` on
``<state dir>/lock`` and keeps it until it exits (the kernel drops it with the
process, also on SIGKILL: a crash never leaves a stale lock); it writes its pid
and node into the file, so that a second agent refuses with one line naming the
directory and the holder.

The lock is advisory and local: a state directory on a network filesystem
shared by two hosts is not protected (hostPath, the chart's default, is local).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import StartupError, StateDirBusy

__all__ = ["LOCK_FILE", "StateDirLock"]

log = logging.getLogger(__name__)

LOCK_FILE = "lock"


@dataclass
class StateDirLock:
    """The held lock of a state directory; ``release()`` (or process exit) frees it."""

    directory: Path
    fd: int | None

    @classmethod
    def acquire(cls, directory: Path, node: str) -> StateDirLock:
        """Lock ``directory`` for this process (blocking I/O, never waits for the lock).

        Raises StateDirBusy naming the holder when another live agent has it,
        StartupError when the directory cannot be made or the lock file opened.
        """
        path = directory / LOCK_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"cannot keep the agent id in {directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateDirBusy(
                    f"state directory {directory} is in use by another agent ({holder}); "
                    "give each agent its own --state-dir"
                ) from None
            raise StartupError(f"cannot lock the state directory {directory}: {exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid={os.getpid()} node={node}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"cannot write {path}: {exc}") from exc
        return cls(directory, fd)

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the last descriptor drops the flock


def _holder(fd: int) -> str:
    """``pid 123, node sim-node-1`` from the lock file's ``pid=… node=…``."""
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace")
    except OSError:
        text = ""
    fields = dict(part.partition("=")[::2] for part in text.split())
    if not fields.get("pid"):
        return "holder unknown"
    return f"pid {fields['pid']}, node {fields.get('node') or '?'}"

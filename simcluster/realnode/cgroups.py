"""Pod cgroups under a parent each real node owns, on cgroup v1 and v2.

A kubelet puts every pod in a cgroup of its own (``kubepods/pod<uid>`` with the
cgroupfs driver) and sets that cgroup's memory limit to the sum of its
containers' limits before the sandbox starts. That pod-level limit is what makes
memory limits real for gVisor, which charges everything to the sandbox's cgroup
and does not enforce a container-level limit. A real node does the same under
``/rtbench-<id>/kubepods``, a tree it alone owns (so two nodes never share one and
``stop()`` can remove all of it), named so that the agent's cgroup finder
(``kubepods`` at most three levels below ``/sys/fs/cgroup``) finds the pods.

The runtimes create the sandbox's and containers' cgroups below the pod's, in every
v1 hierarchy; only the memory hierarchy is created here, because that is where the
limit is written. Removal walks every hierarchy, deepest first.

Reading and writing these small files takes microseconds, so it is done inline.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path

__all__ = ["PodCgroups", "cgroup_v2"]

ROOT = Path("/sys/fs/cgroup")
REMOVE_TRIES = 50
"""rmdir fails with EBUSY for a moment after a cgroup's last task exits; retry a while."""


def cgroup_v2(root: Path = ROOT) -> bool:
    """True on a unified (v2 only) hierarchy, False on v1 or hybrid."""
    return (root / "cgroup.controllers").is_file()


class PodCgroups:
    """The cgroup tree ``/<name>/kubepods/pod<uid>`` of one node."""

    def __init__(self, name: str, root: Path = ROOT) -> None:
        self.name = name
        self.root = root
        self.v2 = cgroup_v2(root)

    @property
    def kubepods(self) -> str:
        """The cgroupfs path of the pods' parent, as runtimes take it."""
        return f"/{self.name}/kubepods"

    def parent(self, uid: str) -> str:
        """``linux.cgroup_parent`` for RunPodSandbox of pod ``uid``."""
        return f"{self.kubepods}/pod{uid}"

    def _memory_root(self) -> Path:
        return self.root if self.v2 else self.root / "memory"

    def _hierarchies(self) -> list[Path]:
        """Every mounted hierarchy the runtimes may have created directories in."""
        if self.v2:
            return [self.root]
        found = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                found.append(entry)
        return found

    def check_writable(self) -> str | None:
        """None when a cgroup can be made here, else why not."""
        probe = self._memory_root() / f"{self.name}-probe"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError as exc:
            return f"cannot create a cgroup under {self._memory_root()}: {exc.strerror}"
        return None

    def create_parent(self) -> None:
        """``/<name>/kubepods`` in the memory hierarchy, with the controllers delegated (v2)."""
        base = self._memory_root()
        (base / self.kubepods.lstrip("/")).mkdir(parents=True, exist_ok=True)
        if self.v2:
            for directory in (base, base / self.name, base / self.kubepods.lstrip("/")):
                _enable_controllers(directory)

    def create_pod(self, uid: str, memory_limit_bytes: int | None) -> Path:
        """The pod's memory cgroup, its limit set (None: unlimited); its directory."""
        directory = self._memory_root() / self.parent(uid).lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        if self.v2:
            _enable_controllers(directory)
        if memory_limit_bytes is not None:
            name = "memory.max" if self.v2 else "memory.limit_in_bytes"
            (directory / name).write_text(str(memory_limit_bytes))
        return directory

    def memory_bytes(self, uid: str) -> int | None:
        """The pod cgroup's memory use now, None when it does not exist."""
        directory = self._memory_root() / self.parent(uid).lstrip("/")
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        try:
            return int((directory / name).read_text())
        except (OSError, ValueError):
            return None

    def remove_pod(self, uid: str) -> list[str]:
        """Removes the pod's cgroups in every hierarchy; the paths that stayed."""
        return self._remove(self.parent(uid))

    def remove_all(self) -> list[str]:
        """Removes ``/<name>`` and everything below in every hierarchy; what stayed."""
        return self._remove(f"/{self.name}")

    def leftovers(self) -> list[str]:
        """Directories of this tree that still exist, in any hierarchy."""
        return [str(h / self.name) for h in self._hierarchies() if (h / self.name).exists()]

    def _remove(self, path: str) -> list[str]:
        stayed: list[str] = []
        for hierarchy in self._hierarchies():
            top = hierarchy / path.lstrip("/")
            if not top.is_dir():
                continue
            # Deepest first: a cgroup with children cannot be removed.
            dirs = sorted(
                (Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True
            )
            for directory in dirs:
                if not _rmdir(directory):
                    stayed.append(str(directory))
        return stayed


def _enable_controllers(directory: Path) -> None:
    control = directory / "cgroup.subtree_control"
    try:
        available = (directory / "cgroup.controllers").read_text().split()
    except OSError:
        return
    for controller in ("cpu", "memory", "pids"):
        if controller in available:
            with contextlib.suppress(OSError):
                control.write_text(f"+{controller}")


def _rmdir(directory: Path) -> bool:
    for _ in range(REMOVE_TRIES):
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return False
            time.sleep(0.02)
    return False

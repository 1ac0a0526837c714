"""Finding, and if need be building, the workload binary the kubelets run.

The workload is the repository's C server (``workload/server.c``). A source
checkout builds it with ``make -C workload``; the simulator does the same when
no ``--workload`` is given and ``workload/build/server`` is missing, and says
plainly what is missing when it cannot (no gcc or make, no source tree).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from .errors import WorkloadError

SOURCE_DIR = Path(__file__).resolve().parent.parent / "workload"
DEFAULT_BINARY = SOURCE_DIR / "build" / "server"


def locate_workload(path: Path | None) -> Path | None:
    """The binary to run, or None when the repository's must be built first.

    An explicit ``path`` is not checked: a missing binary is one of the failures
    the simulated kubelet reports (CreateContainerError).
    """
    if path is not None:
        return Path(path).absolute()
    if DEFAULT_BINARY.is_file():
        return DEFAULT_BINARY
    if not (SOURCE_DIR / "Makefile").is_file():
        raise WorkloadError(
            f"workload binary not found at {DEFAULT_BINARY} and no workload/ source next to the "
            "simcluster package; pass --workload PATH"
        )
    missing = [tool for tool in ("make", "gcc") if shutil.which(tool) is None]
    if missing:
        raise WorkloadError(
            f"cannot build the workload: {' and '.join(missing)} not installed "
            f"(install them, or pass --workload PATH)"
        )
    return None


async def ensure_workload(path: Path | None) -> Path:
    """``locate_workload``, building the repository's binary with make when needed."""
    found = locate_workload(path)
    if found is not None:
        return found
    proc = await asyncio.create_subprocess_exec(
        "make",
        "-s",
        "-C",
        str(SOURCE_DIR),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0 or locate_workload(None) is None:
        last = output.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise WorkloadError(f"make -C {SOURCE_DIR} failed (exit {proc.returncode}): {last[0]}")
    return DEFAULT_BINARY

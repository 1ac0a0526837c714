"""Fixtures for tests against the simulated cluster, over real HTTP.

- ``sim``: an in-process ``SimCluster`` (2 nodes, port 0, fast PLEG) with a
  kubeconfig in tmp_path (``sim.kubeconfig``); stopped after the test.
  ``running_sim(workload, tmp_path, **overrides)`` is the same as a context
  manager, for modules whose ``sim`` needs other settings (containerd sockets in
  ``socket_dir``, a short directory under /tmp, or another relist).
- ``sim_process``: ``rtbench-sim`` run as a subprocess from the venv, its ready
  line parsed into a ``SimProcess`` (url, kubeconfig, pid); terminated after.
- ``api``: a kubernetes-asyncio ApiClient loaded from ``sim``'s kubeconfig.
- ``http``: an aiohttp session.
- ``wait_for``: poll a condition with a deadline instead of sleeping.

``workload_binary`` (session-scoped, builds with ``make -C workload``) comes
from tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from simcluster.cluster import SimCluster
from tests.conftest import wait_until

BIN = Path(sys.executable).parent
READY = re.compile(
    r"^rtbench-sim ready url=(\S+) kubeconfig=(\S+) nodes=(\d+)"
    r"(?: pods=(\w+))?(?: containerd=(\S+))?$"
)

T = TypeVar("T")
WaitFor = Callable[..., Awaitable[Any]]


@contextlib.asynccontextmanager
async def running_sim(
    workload: Path, tmp_path: Path, **overrides: Any
) -> AsyncIterator[SimCluster]:
    """A started SimCluster (the ``sim`` fixture's settings, with ``overrides``), its
    kubeconfig in tmp_path; stopped on exit."""
    settings: dict[str, Any] = {
        "nodes": 2,
        "pleg_period": 0.05,
        "seed": 7,
        "workload": workload,
        "state_dir": tmp_path / "state",
        "bookmark_interval": 0.3,
        "crashloop_backoff": 0.3,
        "crashloop_backoff_max": 1.0,
        **overrides,
    }
    cluster = SimCluster(**settings)
    await cluster.start()
    cluster.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def sim(workload_binary: Path, tmp_path: Path) -> AsyncIterator[SimCluster]:
    async with running_sim(workload_binary, tmp_path) as cluster:
        yield cluster


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory for containerd sockets: not under tmp_path, whose paths can pass the
    107-byte unix socket limit."""
    path = Path(tempfile.mkdtemp(prefix="rtb-ctd-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def api(sim: SimCluster) -> AsyncIterator[k8s.ApiClient]:
    assert sim.kubeconfig is not None
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(sim.kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as client:
        yield client


def as_body(obj: dict[str, Any]) -> Any:
    """A plain dict as a kubernetes-asyncio request body.

    The client sends dicts as they are; its type hints only name its model classes.
    """
    return obj


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def _wait_for(
    condition: Callable[[], Any], *, within: float = 15.0, every: float = 0.02, what: str = ""
) -> Any:
    """``tests.conftest.wait_until`` with this layer's default deadline."""
    return await wait_until(condition, within=within, every=every, what=what)


@pytest.fixture
def wait_for() -> WaitFor:
    return _wait_for


@dataclass
class SimProcess:
    url: str
    kubeconfig: Path
    nodes: int
    process: subprocess.Popen[str]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def start_sim_process(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, within: float = 60.0
) -> SimProcess:
    """Run ``rtbench-sim`` and wait for its ready line."""
    stderr_path = tmp_path / "rtbench-sim.stderr"
    argv = [
        str(BIN / "rtbench-sim"),
        "--nodes",
        "2",
        "--kubeconfig",
        str(tmp_path / "sim.kubeconfig"),
        "--state-dir",
        str(tmp_path / "sim-state"),
        "--pleg-period",
        "0.1",
        *args,
    ]
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert process.stdout is not None
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, remaining))
        line = process.stdout.readline() if ready else ""
        match = READY.match(line.strip())
        if match:
            return SimProcess(match[1], Path(match[2]), int(match[3]), process, stderr_path)
        if not line or remaining <= 0:
            stop_sim_process(process)
            raise AssertionError(f"rtbench-sim did not become ready: {stderr_path.read_text()}")


def stop_sim_process(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@pytest.fixture
def sim_process(workload_binary: Path, tmp_path: Path) -> Iterator[SimProcess]:
    """``rtbench-sim --nodes 2`` as a subprocess; ``.url``, ``.kubeconfig``, ``.pid``."""
    sim = start_sim_process(tmp_path, "--workload", str(workload_binary))
    try:
        yield sim
    finally:
        code = stop_sim_process(sim.process)
        assert code == 0, sim.stderr()


@pytest.fixture
async def sim_process_api(sim_process: SimProcess) -> AsyncIterator[k8s.ApiClient]:
    """A kubernetes-asyncio client for ``sim_process``, from the kubeconfig it wrote."""
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(sim_process.kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as client:
        yield client

"""The rtctl tests' stack: simulated cluster, collector and one agent per node, as processes.

- ``stack``: a running ``rtctl.localstack.LocalStack`` (2 nodes, seed 7, fast
  PLEG; containerd sockets per node and the simulated nodes' meminfo for the
  agents, as the stack sets them up) shared by the tests of one module,
  exporting to a database of its own in the session InfluxDB. Each test gets it
  clean: after the test every Deployment is deleted, the test waits until no pod
  is left and clears injected faults. A stack that a test broke (a process
  died) is replaced before the next test. Tests stay independent by using their
  own test ids and run ids.
- ``stack_factory(**settings)``: a stack of the test's own with other
  ``StackSettings`` (e.g. ``max_pods=3``, ``nodes=1``), stopped after the test.

Both give a ``Stack``: ``collector_address``, ``kubeconfig``, ``journal`` (the
collector's SQLite journal, for recomputing numbers independently), ``influx_db``
and ``influxd``, ``nodes``, ``sim_url``, ``env()`` and ``rtctl(*args)`` running the
installed ``rtctl`` with ``RTBENCH_RTCTL_COLLECTOR`` / ``RTBENCH_RTCTL_KUBECONFIG``
set, ``sim(path)`` for the simulator's API, and ``pods()``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from rtbench.influxd import LocalInfluxd
from rtctl.localstack import LocalStack, StackSettings

BIN = Path(sys.executable).parent
_databases = itertools.count(1)


@dataclass
class Stack:
    """A running LocalStack as the rtctl tests use it."""

    local: LocalStack
    influxd: LocalInfluxd
    root: Path

    @property
    def collector_address(self) -> str:
        return self.local.collector_address

    @property
    def kubeconfig(self) -> Path:
        return self.local.kubeconfig

    @property
    def journal(self) -> Path:
        return self.local.journal

    @property
    def influx_db(self) -> str:
        assert self.local.influx_db is not None
        return self.local.influx_db

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.local.nodes

    @property
    def sim_url(self) -> str:
        return self.local.sim_url

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """os.environ without any RTBENCH_RTCTL_*, plus this stack's connection."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_RTCTL_")}
        return {**env, **self.local.rtctl_env(), **(extra or {})}

    def rtctl(
        self,
        *args: str,
        timeout: float = 240.0,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``rtctl ARGS`` against this stack; output captured as text, never raises on exit."""
        return subprocess.run(
            [str(BIN / "rtctl"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(env),
            cwd=cwd or self.root,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def rtctl_process(
        self, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        """``rtctl ARGS`` started, not awaited (for signal tests); the caller reaps it."""
        return subprocess.Popen(
            [str(BIN / "rtctl"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(env),
            cwd=cwd or self.root,
            stdin=subprocess.DEVNULL,
        )

    def sim(self, path: str, method: str = "GET", body: Any = None) -> Any:
        """One request to the simulator's API; see ``sim_request``."""
        return sim_request(self.sim_url, path, method, body)

    def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        items: list[dict[str, Any]] = self.sim(path)["items"]
        return items

    def reset(self, within: float = 120.0) -> None:
        """Delete every Deployment, wait until no pod is left, clear injected faults."""
        self.sim("/_sim/faults", method="DELETE")
        for item in self.sim("/apis/apps/v1/deployments")["items"]:
            meta = item["metadata"]
            self.sim(
                f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}",
                method="DELETE",
            )
        deadline = time.monotonic() + within
        while pods := self.pods():
            if time.monotonic() > deadline:
                names = ", ".join(p["metadata"]["name"] for p in pods[:10])
                raise AssertionError(f"pods still there {within:.0f} s after cleanup: {names}")
            time.sleep(0.1)


def sim_request(url: str, path: str, method: str = "GET", body: Any = None) -> Any:
    """One request to the simulator at ``url`` (plain HTTP, JSON); the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as reply:
        raw = reply.read()
    return json.loads(raw) if raw else None


def start_stack(root: Path, influxd: LocalInfluxd, workload: Path, **overrides: Any) -> Stack:
    """A started stack under ``root`` exporting to a fresh database in ``influxd``."""
    database = f"rtctl_{os.getpid()}_{next(_databases)}"
    influxd.create_database(database)
    settings = StackSettings(
        root=root,
        nodes=2,
        seed=7,
        workload=workload,
        pleg_period=0.1,
        influx_url=influxd.url,
        influx_db=database,
    )
    local = LocalStack(replace(settings, **overrides))
    local.start()
    return Stack(local, influxd, root)


class _Shared:
    """The module's stack, started lazily and replaced when a test broke it."""

    def __init__(self, factory: Callable[[], Stack]) -> None:
        self._factory = factory
        self.current: Stack | None = None

    def get(self) -> Stack:
        if self.current is not None:
            try:
                self.current.local.check()
            except Exception:
                self.current.local.stop(strict=False)
                self.current = None
        if self.current is None:
            self.current = self._factory()
        return self.current


@pytest.fixture(scope="module")
def _module_stack(
    tmp_path_factory: pytest.TempPathFactory, influxd: LocalInfluxd, workload_binary: Path
) -> Iterator[_Shared]:
    shared = _Shared(
        lambda: start_stack(tmp_path_factory.mktemp("stack"), influxd, workload_binary)
    )
    yield shared
    if shared.current is not None:
        shared.current.local.stop()


@pytest.fixture
def stack(_module_stack: _Shared) -> Iterator[Stack]:
    current = _module_stack.get()
    yield current
    current.reset()
    current.local.check()


StackFactory = Callable[..., Stack]


@pytest.fixture
def stack_factory(
    tmp_path: Path, influxd: LocalInfluxd, workload_binary: Path
) -> Iterator[StackFactory]:
    started: list[Stack] = []

    def start(**overrides: Any) -> Stack:
        root = tmp_path / f"stack{len(started) + 1}"
        made = start_stack(root, influxd, workload_binary, **overrides)
        started.append(made)
        return made

    yield start
    for made in started:
        made.local.stop()

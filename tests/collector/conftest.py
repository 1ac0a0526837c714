"""Fixtures for the collector tests: the collector in-process or as a real process.

- ``settings``: CollectorSettings on a free loopback port (0) with a journal in tmp_path.
- ``collector``: a started in-process ``Collector`` with those settings, run
  under its TaskGroup and stopped (two-stage shutdown) after the test.
- ``running(settings)``: the same as an async context manager, for custom settings.
- ``collector_process``: a factory starting ``collector serve`` from the venv as
  a subprocess; parses its ready line; kills what is left after the test.
- ``until``: poll a condition with a generous deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from collector.app import Collector
from collector.settings import CollectorSettings
from tests.conftest import wait_until

BIN = Path(sys.executable).parent
READY = re.compile(r"^collector ready listen=(\S+) journal=(\S+) collector_id=(\w+)$")


@pytest.fixture
def settings(tmp_path: Path) -> CollectorSettings:
    return CollectorSettings(
        listen_port=0,
        journal=tmp_path / "journal.sqlite",
        stats_interval=0,
        shutdown_grace=10.0,
    )


@contextlib.asynccontextmanager
async def running(settings: CollectorSettings, **overrides: Any) -> AsyncIterator[Collector]:
    """A started collector; on exit stage one of shutdown runs and must finish cleanly."""
    collector = Collector(replace(settings, **overrides))
    await collector.start()
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop), name="collector")
    try:
        yield collector
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 60)
        finally:
            await collector.close()


@pytest.fixture
async def collector(settings: CollectorSettings) -> AsyncIterator[Collector]:
    async with running(settings) as c:
        yield c


async def until(
    condition: Callable[[], Any], *, within: float = 120.0, every: float = 0.02, what: str = ""
) -> Any:
    """``tests.conftest.wait_until`` with this layer's default deadline."""
    return await wait_until(condition, within=within, every=every, what=what)


@dataclass
class CollectorProcess:
    process: subprocess.Popen[str]
    listen: str
    journal: Path
    collector_id: str
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_collector(
    args: Sequence[str], env: Mapping[str, str], stderr_path: Path, timeout: float = 60.0
) -> CollectorProcess:
    """Starts ``collector serve ARGS`` and waits for its ready line."""
    with open(stderr_path, "a") as err:
        proc = subprocess.Popen(
            [str(BIN / "collector"), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **env},
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            match = READY.match(line.strip())
            if match:
                return CollectorProcess(proc, match[1], Path(match[2]), match[3], stderr_path)
        if proc.poll() is not None:
            break
    proc.kill()
    proc.wait()
    raise AssertionError(
        f"collector did not become ready (exit {proc.returncode}): "
        f"{stderr_path.read_text(errors='replace')[-2000:]}"
    )


StartCollector = Callable[..., CollectorProcess]


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[StartCollector]:
    started: list[CollectorProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> CollectorProcess:
        proc = start_collector(args, env or {}, tmp_path / "collector.stderr")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait()
        if proc.process.stdout is not None:
            proc.process.stdout.close()

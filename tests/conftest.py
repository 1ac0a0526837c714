"""Fixtures for real parts every test layer may need: the workload binary and InfluxDB."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rtbench.influxd import LocalInfluxd

REPO = Path(__file__).resolve().parent.parent


def kill_if_running(process: subprocess.Popen[Any]) -> None:
    """Kill and reap ``process`` unless it has ended (a test's ``finally``: no child is
    left behind when the test fails before the process did)."""
    if process.poll() is None:
        process.kill()
        process.wait()


async def wait_until(
    condition: Callable[[], Any], *, within: float, every: float = 0.02, what: str = ""
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy; that value.

    Raises AssertionError naming ``what`` after ``within`` seconds: tests wait for
    what they need with generous deadlines instead of sleeping a fixed time.
    """
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or condition}")
        await asyncio.sleep(every)


T = TypeVar("T")


def poll_until(
    condition: Callable[[], T | None], *, within: float, what: str, every: float = 0.1
) -> T:
    """``wait_until`` for synchronous tests: ``condition()`` until it returns something
    truthy, that value; AssertionError naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="session")
def workload_binary() -> Path:
    """The workload server, built from workload/server.c with gcc."""
    subprocess.run(["make", "-s", "-C", str(REPO / "workload")], check=True)
    path = REPO / "workload" / "build" / "server"
    assert path.exists()
    return path


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfluxd]:
    """A real InfluxDB 1.x on a free loopback port, shared by the session.

    Tests that stop or break the server use ``own_influxd`` instead.
    """
    server = LocalInfluxd(root=tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[LocalInfluxd]:
    """A real InfluxDB that this test alone uses, free to stop and restart."""
    server = LocalInfluxd(root=tmp_path / "influxd")
    server.start()
    yield server
    server.close()

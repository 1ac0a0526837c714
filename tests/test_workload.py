"""The workload server: listen-time line, HTTP answers, SIGTERM, bad arguments, static build."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from rtbench.influxd import free_port

from .conftest import REPO

LISTEN = re.compile(r"rtbench-workload listening addr=(\S+) port=(\d+) epoch_ms=(\d+\.\d{3})")


def start(binary: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(binary), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def server(workload_binary: Path) -> Iterator[tuple[subprocess.Popen[str], str, float, float]]:
    port = free_port()
    before = time.time() * 1000
    proc = start(workload_binary, "-a", "127.0.0.1", "-p", str(port))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    after = time.time() * 1000
    match = LISTEN.match(line)
    assert match, line
    assert match.group(1) == "127.0.0.1" and int(match.group(2)) == port
    listen_ms = float(match.group(3))
    assert before <= listen_ms <= after
    yield proc, f"http://127.0.0.1:{port}", listen_ms, after
    finish(proc)


def finish(proc: subprocess.Popen[str]) -> str:
    """Stops the server if it still runs and returns the rest of its stdout."""
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=5)
    return out


async def test_answers_get_root_and_refuses_the_rest(
    server: tuple[subprocess.Popen[str], str, float, float],
) -> None:
    _, url, _, _ = server
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/") as resp:
            assert resp.status == 200
            assert await resp.text() == "ok\n"
        async with session.head(url + "/") as resp:
            assert resp.status == 200
        async with session.get(url + "/missing") as resp:
            assert resp.status == 404
        async with session.post(url + "/", data=b"x") as resp:
            assert resp.status == 405


async def test_concurrent_clients_all_answered(
    server: tuple[subprocess.Popen[str], str, float, float],
) -> None:
    _, url, _, _ = server
    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            async with session.get(url + "/") as resp:
                return resp.status

        statuses = await asyncio.gather(*(one() for _ in range(100)))
    assert statuses == [200] * 100


def test_sigterm_exits_zero(server: tuple[subprocess.Popen[str], str, float, float]) -> None:
    proc, _, _, _ = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert "rtbench-workload stopped" in finish(proc)


def test_address_and_port_from_environment(workload_binary: Path) -> None:
    port = free_port()
    proc = start(workload_binary, env={"LISTEN_ADDR": "127.0.0.1", "PORT": str(port), "BODY": "hi"})
    try:
        assert proc.stdout is not None
        match = LISTEN.match(proc.stdout.readline())
        assert match and int(match.group(2)) == port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read() == b"hi\n"
    finally:
        finish(proc)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "0"], "invalid port"),
        (["-p", "99999"], "invalid port"),
        (["-p", "80x"], "invalid port"),
        (["-a", "not-an-ip"], "invalid IPv4 address"),
        (["-z"], "usage"),
        (["extra"], "usage"),
    ],
)
def test_bad_arguments_exit_2(workload_binary: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([str(workload_binary), *args], capture_output=True, text=True, timeout=5)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_port_in_use_exits_1(
    server: tuple[subprocess.Popen[str], str, float, float], workload_binary: Path
) -> None:
    _, url, _, _ = server
    port = url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [str(workload_binary), "-a", "127.0.0.1", "-p", port],
        capture_output=True,
        text=True,
        timeout=5,
    )
    assert proc.returncode == 1
    assert "bind 127.0.0.1" in proc.stderr


def test_static_build_has_no_dynamic_dependencies(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "-C", str(REPO / "workload"), "static", f"BUILD={tmp_path}"], check=True
    )
    binary = tmp_path / "server-static"
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    assert "not a dynamic executable" in (ldd.stdout + ldd.stderr)
    assert subprocess.run([str(binary), "-h"], capture_output=True).returncode == 0

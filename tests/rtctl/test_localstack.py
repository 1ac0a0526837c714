"""The local stack starts usable, stops clean, and says which process failed and why."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from rtbench.v1 import control_pb2, control_pb2_grpc
from rtctl.localstack import LocalStack, StackError, StackSettings
from tests.agent.conftest import workload_deployment
from tests.conftest import wait_until
from tests.rtctl.conftest import Stack, sim_request


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def sim_request_text(url: str, path: str) -> str:
    with urllib.request.urlopen(url + path, timeout=30) as reply:
        return str(reply.read().decode())


def sim_available(sim_url: str, node: str) -> int:
    """MemAvailable of a simulated node, in bytes, as its /proc/meminfo says it."""
    text = sim_request_text(sim_url, f"/_sim/nodes/{node}/meminfo")
    kib = next(line.split()[1] for line in text.splitlines() if line.startswith("MemAvailable:"))
    return int(kib) * 1024


def journal_has_sample(journal: Path, node: str, available: int) -> bool:
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        query = "SELECT count(*) FROM samples WHERE node = ? AND mem_available_bytes = ?"
        return int(db.execute(query, (node, available)).fetchone()[0]) > 0


def settings(root: Path, workload: Path, **overrides: object) -> StackSettings:
    values: dict[str, object] = {"root": root, "seed": 3, "workload": workload, "pleg_period": 0.1}
    values.update(overrides)
    return StackSettings(**values)  # type: ignore[arg-type]


async def test_starts_usable_and_stops_leaving_no_process(
    tmp_path: Path, workload_binary: Path
) -> None:
    messages: list[str] = []
    async with LocalStack(settings(tmp_path, workload_binary), messages.append) as stack:
        assert stack.nodes == ("sim-node-1", "sim-node-2")
        assert stack.journal.exists()
        assert stack.kubeconfig.exists()
        assert set(stack.pids) == {"rtbench-sim", "collector", *(f"agent-{n}" for n in stack.nodes)}
        async with grpc.aio.insecure_channel(stack.collector_address) as channel:
            control = control_pb2_grpc.ControlServiceStub(channel)
            agents = (await control.ListAgents(control_pb2.ListAgentsRequest())).agents
        assert {a.node for a in agents if a.connected and a.clock.samples > 0} == set(stack.nodes)
        assert stack.rtctl_env()["RTBENCH_RTCTL_COLLECTOR"] == stack.collector_address
        # The agents read the simulated nodes' memory, not the host's (exact to the kB).
        idle = {node: sim_available(stack.sim_url, node) for node in stack.nodes}
        for node, available in idle.items():
            await wait_until(
                functools.partial(journal_has_sample, stack.journal, node, available),
                within=60,
                what=f"a sample of {node} with the simulated MemAvailable {available}",
            )
        # Pods with real workload processes, so stopping has something to clean up.
        path = "/apis/apps/v1/namespaces/default/deployments"
        sim_request(stack.sim_url, path, "POST", workload_deployment("leftovers", 4))

        def workloads() -> list[int]:
            processes = sim_request(stack.sim_url, "/_sim/state")["processes"]
            return [int(p["pid"]) for p in processes] if len(processes) == 4 else []

        pids = await wait_until(workloads, within=120, what="4 workload processes")
        stack_pids = list(stack.pids.values())
    assert any("waiting for agents" in m for m in messages), messages
    assert messages[-1].startswith("stack ready: 2 nodes"), messages
    assert stack.exit_codes == dict.fromkeys(stack.pids, 0)
    assert sorted(stack.workload_pids) == sorted(pids)
    assert not [pid for pid in [*stack_pids, *pids] if alive(pid)]
    for name in stack.pids:
        assert (tmp_path / "logs" / f"{name}.log").exists()


def test_a_process_that_dies_at_start_is_named_with_its_log(
    tmp_path: Path, workload_binary: Path
) -> None:
    bad = settings(tmp_path, workload_binary, collector_args=("--max-batch-events", "-5"))
    stack = LocalStack(bad)
    with pytest.raises(StackError) as caught:
        try:
            stack.start()
        finally:
            stack.stop(strict=False)  # only does something if the start wrongly succeeded
    message = str(caught.value)
    first = message.splitlines()[0]
    assert first.startswith("collector exited with 2 while starting; log: "), message
    assert first.endswith(str(tmp_path / "logs" / "collector.log"))
    assert "max_batch_events must be at least 1" in message.split("\n", 1)[1], "the log tail"
    # The simulator started beside it was stopped again.
    assert stack.exit_codes["collector"] == 2
    assert not [pid for pid in stack.pids.values() if alive(pid)]


def test_an_agent_that_dies_at_start_is_named(tmp_path: Path, workload_binary: Path) -> None:
    bad = settings(tmp_path, workload_binary, nodes=1, agent_args=("--probe-rate", "nope"))
    stack = LocalStack(bad)
    with pytest.raises(StackError, match=r"^agent-sim-node-1 exited with 2 while starting") as e:
        try:
            stack.start()
        finally:
            stack.stop(strict=False)
    assert "probe-rate" in str(e.value)
    assert not [pid for pid in stack.pids.values() if alive(pid)]


def test_a_process_dying_later_is_reported(tmp_path: Path, workload_binary: Path) -> None:
    stack = LocalStack(settings(tmp_path, workload_binary, nodes=1))
    stack.start()
    try:
        os.kill(stack.pids["agent-sim-node-1"], 9)
        deadline = time.monotonic() + 60
        with pytest.raises(StackError, match="agent-sim-node-1 exited with -9 while the stack"):
            while time.monotonic() < deadline:
                stack.check()
                time.sleep(0.05)
    finally:
        with pytest.raises(StackError, match="agent-sim-node-1 exited with -9 before it was st"):
            stack.stop()
    assert stack.exit_codes == {"rtbench-sim": 0, "collector": 0, "agent-sim-node-1": -9}


def test_the_fixture_points_rtctl_at_the_stack(stack: Stack) -> None:
    env = stack.env()
    assert env["RTBENCH_RTCTL_COLLECTOR"] == stack.collector_address
    assert env["RTBENCH_RTCTL_KUBECONFIG"] == str(stack.kubeconfig)
    done = stack.rtctl("agents", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert sorted(a["node"] for a in json.loads(done.stdout)) == sorted(stack.nodes)
    databases = stack.influxd.query("SHOW DATABASES")[0]["series"][0]["values"]
    assert [stack.influx_db] in databases
    assert len(stack.nodes) == 2
    assert stack.pods() == []


async def test_cancelling_the_start_stops_what_was_started(
    tmp_path: Path, workload_binary: Path
) -> None:
    """Ctrl-C during ``rtctl demo``'s start cancels the task inside ``async with``."""
    stack = LocalStack(settings(tmp_path, workload_binary))

    async def use() -> None:
        async with stack:
            raise AssertionError("the start should have been cancelled")

    task = asyncio.create_task(use())
    await wait_until(lambda: "collector" in stack.pids, within=60, what="the collector started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert set(stack.exit_codes) == set(stack.pids)
    assert not [pid for pid in stack.pids.values() if alive(pid)]


def test_the_fixture_cleans_up_between_tests(stack: Stack) -> None:
    """What ``stack`` does after each test: no Deployment, no pod, no fault is left."""
    path = "/apis/apps/v1/namespaces/default/deployments"
    stack.sim(path, "POST", workload_deployment("left-behind", 3))
    stack.sim("/_sim/faults/slow", "POST", {"delay_ms": 1, "seconds": 600})
    assert len(stack.sim("/apis/apps/v1/deployments")["items"]) == 1
    stack.reset()
    assert stack.sim("/apis/apps/v1/deployments")["items"] == []
    assert stack.pods() == []
    assert not any(stack.sim("/_sim/faults").values())

"""The agent as a real process: kill -9 and restart, graceful and hurried shutdown, end to end.

The SIGKILL and shutdown tests run the real ``agent run`` program with a feeder
in place of the Kubernetes observers (tests/agent/harness.py), so the number of
records is known; the end-to-end test runs the unmodified ``agent`` console
script for each node of a simulated cluster (``rtbench-sim`` as a process). The
collector is the in-process test collector on a fixed loopback port, so it can
be stopped and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client as k8s

from agent.app import Agent, Observer
from agent.errors import TaskDied
from agent.observing import ObserveSettings
from agent.outbox import Outbox
from agent.settings import AgentSettings
from rtbench.influxd import free_port
from rtbench.v1 import agent_pb2, events_pb2
from tests.agent.conftest import as_body, workload_deployment
from tests.agent.fake_collector import FakeCollector
from tests.agent.harness import REPO, record_ids, uplink_settings, wait_for
from tests.simcluster.conftest import SimProcess

AGENT = Path(sys.executable).parent / "agent"


@dataclass
class AgentProcess:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text()

    def err(self) -> str:
        return self.stderr.read_text()

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def wait(self, within: float = 60) -> int:
        """The exit code; polls, so the collector in this event loop keeps answering."""
        await wait_for(lambda: self.process.poll() is not None, within=within, what="exit")
        return self.process.returncode


@pytest.fixture
def processes() -> Iterator[list[AgentProcess]]:
    """Agent processes started by the test; any still running is killed at teardown."""
    started: list[AgentProcess] = []
    yield started
    for one in started:
        if one.process.poll() is None:
            one.process.kill()
            one.process.wait()


def spawn(
    processes: list[AgentProcess], tmp_path: Path, name: str, argv: list[str]
) -> AgentProcess:
    stdout, stderr = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_AGENT_")}
    env.pop("NODE_NAME", None)
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO, env=env)
    processes.append(AgentProcess(process, stdout, stderr))
    return processes[-1]


def feeder(
    processes: list[AgentProcess],
    tmp_path: Path,
    name: str,
    *,
    first: int,
    count: int,
    collector: str,
    rate: float = 400,
    extra: tuple[str, ...] = (),
) -> AgentProcess:
    argv = [sys.executable, "-m", "tests.agent.harness", "--first", str(first)]
    argv += ["--count", str(count), "--rate", str(rate), "--"]
    argv += ["--node", "node-1", "--collector", collector, "--state-dir", str(tmp_path / "state")]
    argv += ["--batch-max-events", "20", "--reconnect-max", "0.5", "--progress-interval", "1"]
    return spawn(processes, tmp_path, name, [*argv, *extra])


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state" / "spool").glob("*/*.batch"))


def assert_each_once(fake: FakeCollector, expected: range) -> None:
    counts = Counter(record_ids(fake.events()))
    assert sorted(counts) == list(expected), "records missing or unexpected"
    assert max(counts.values()) == 1, "a record was committed twice"


async def test_killed_agent_resends_its_spool(
    tmp_path: Path, processes: list[AgentProcess]
) -> None:
    fake = FakeCollector()
    await fake.start()
    try:
        first = feeder(processes, tmp_path, "first", first=0, count=2000, collector=fake.address)
        await wait_for(lambda: fake.event_count() >= 200, within=60, what="first records")
        await fake.stop()
        await wait_for(lambda: "fed 2000" in first.out(), within=120, what="all fed")
        spooled = spool_files(tmp_path)
        assert spooled, "the outage left nothing in the spool"
        first.process.kill()
        assert await first.wait() == -signal.SIGKILL
        assert 0 < fake.event_count() < 2000

        await fake.start()
        second = feeder(
            processes, tmp_path, "second", first=2000, count=100, collector=fake.address
        )
        await wait_for(lambda: fake.event_count() >= 2100, within=120, what="every record")
        await wait_for(lambda: not spool_files(tmp_path), what="an empty spool")
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0, second.err()
    finally:
        await fake.stop()
    assert_each_once(fake, range(2100))
    assert len({h.agent_id for h in fake.hellos}) == 1, "the state dir keeps the identity"
    sequences = sorted(seq for _, seq in fake.committed)
    assert sequences == list(range(1, len(sequences) + 1)), "sequences reused or skipped"
    assert f"spooled_batches={len(spooled)}" in second.err()


async def test_sigterm_flushes_what_is_pending(
    tmp_path: Path, processes: list[AgentProcess]
) -> None:
    async with FakeCollector() as fake:
        fake.ack_delay_s = 1.0
        agent = feeder(
            processes, tmp_path, "agent", first=0, count=300, rate=2000, collector=fake.address
        )
        await wait_for(lambda: "fed 300" in agent.out(), within=60, what="all fed")
        agent.signal(signal.SIGTERM)
        assert await agent.wait() == 0, agent.err()
    assert_each_once(fake, range(300))
    assert "every batch acknowledged" in agent.err()
    assert not spool_files(tmp_path)


async def test_shutdown_keeps_the_spool_and_a_second_signal_cuts_it_short(
    tmp_path: Path, processes: list[AgentProcess]
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    agent = feeder(
        processes,
        tmp_path,
        "agent",
        first=0,
        count=50,
        rate=2000,
        collector=nobody,
        extra=("--shutdown-flush", "600"),
    )
    await wait_for(lambda: "fed 50" in agent.out(), within=60, what="all fed")
    agent.signal(signal.SIGTERM)
    await wait_for(lambda: "flushing to the collector" in agent.err(), what="stage one")
    agent.signal(signal.SIGTERM)
    # Far below the 600 s flush deadline: only the second signal can end it this soon.
    assert await agent.wait(within=60) == 0, agent.err()
    assert "again: exiting without waiting for the collector" in agent.err()
    assert "stay in the spool for the next start" in agent.err()
    assert spool_files(tmp_path)


async def test_agent_run_end_to_end(
    sim_process: SimProcess,
    sim_process_api: k8s.ApiClient,
    tmp_path: Path,
    processes: list[AgentProcess],
) -> None:
    kubeconfig = sim_process.kubeconfig
    async with FakeCollector(clock_shift_ns=50_000_000) as fake:
        agents = [
            spawn(
                processes,
                tmp_path,
                node,
                [
                    str(AGENT),
                    "run",
                    "--node",
                    node,
                    "--collector",
                    fake.address,
                    "--kubeconfig",
                    str(kubeconfig),
                    "--state-dir",
                    str(tmp_path / node),
                    "--progress-interval",
                    "1",
                ],
            )
            for node in ("sim-node-1", "sim-node-2")
        ]
        await wait_for(lambda: len(fake.hellos) == 2, within=60, what="both agents")
        apps = k8s.AppsV1Api(sim_process_api)
        await apps.create_namespaced_deployment("default", as_body(workload_deployment("e2e", 6)))
        wanted = {
            events_pb2.PHASE_SCHEDULED,
            events_pb2.PHASE_RUNNING,
            events_pb2.PHASE_FIRST_RESPONSE,
            events_pb2.PHASE_READY,
        }

        def pods_with_all_phases() -> set[str]:
            seen: dict[str, set[int]] = {}
            for event in fake.events():
                seen.setdefault(event.pod.uid, set()).add(event.phase)
            return {uid for uid, phases in seen.items() if wanted <= phases}

        await wait_for(lambda: len(pods_with_all_phases()) == 6, within=120, what="6 pods")
        await wait_for(
            lambda: all("progress: pods=" in a.err() for a in agents), what="progress lines"
        )
        for agent in agents:
            agent.signal(signal.SIGTERM)
        for agent in agents:
            assert await agent.wait() == 0, agent.err()
    events = fake.events()
    per_phase = Counter((e.pod.uid, e.phase) for e in events if e.phase in wanted)
    assert set(per_phase.values()) == {1}, "an event arrived twice"
    assert {e.pod.node for e in events} == {"sim-node-1", "sim-node-2"}
    assert {h.node for h in fake.hellos} == {"sim-node-1", "sim-node-2"}
    assert all(h.node_facts.cpu_count > 0 for h in fake.hellos)
    offsets = [b.clock for b in fake.batches() if b.HasField("clock")]
    assert offsets and all(abs(c.offset_ns - 50_000_000) <= c.uncertainty_ns for c in offsets)
    for agent in agents:
        err = agent.err()
        assert "agent started: node=sim-node-" in err and f"collector={fake.address}" in err
        assert "every batch acknowledged" in err


class _Broken:
    """Observers that fail at once (raise) or stop on their own (return)."""

    def __init__(self, how: str) -> None:
        self.how = how

    async def run(self) -> None:
        await asyncio.sleep(0.05)
        if self.how == "raise":
            raise RuntimeError("boom")

    def node_facts(self) -> agent_pb2.NodeFacts:
        return agent_pb2.NodeFacts()

    @property
    def tracked_pods(self) -> int:
        return 0


@pytest.mark.parametrize(
    ("how", "message"),
    [("raise", "task observer died: RuntimeError('boom')"), ("return", "returned unexpectedly")],
)
async def test_a_task_that_ends_is_logged_by_name_and_ends_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str, message: str
) -> None:
    @contextlib.asynccontextmanager
    async def broken(settings: AgentSettings, outbox: Outbox) -> AsyncIterator[Observer]:
        yield _Broken(how)

    settings = AgentSettings(
        observe=ObserveSettings(node="n1"),
        uplink=uplink_settings(f"127.0.0.1:{free_port()}", tmp_path),
    )
    with pytest.raises(TaskDied) as info:
        await Agent(settings, broken).run(asyncio.Event(), asyncio.Event())
    assert message in str(info.value)
    assert any(r.levelname == "ERROR" and "task observer" in r.getMessage() for r in caplog.records)

"""Drives the agent's uplink in tests, in process and as a real agent process.

- ``running_uplink``: spool, clock sync, batcher and uplink as the agent wires
  them, running as named tasks for the duration of an ``async with``; records
  go in through ``stack.batcher`` (the Outbox).
- ``python -m tests.agent.harness --count N --rate R -- <agent run flags>``: the
  real ``agent run`` program (settings from flags and environment, signals,
  spool, two-stage shutdown) with a feeder in place of the Kubernetes observers.
  It puts N numbered events at R per second, prints ``fed N`` once all of them
  are sealed into the spool, and then idles until signalled. Tests kill it with
  SIGKILL and start it again to check that the spool is resent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.app import Observer, ObserverFactory, run_agent
from agent.batching import Batcher
from agent.cli import parse_run
from agent.clocksync import ClockSync
from agent.outbox import Outbox
from agent.security import ChannelSecurity
from agent.sending import Uplink
from agent.settings import AgentSettings, UplinkSettings
from agent.spool import Spool
from rtbench.clock import mono_ns, wall_ns
from rtbench.v1 import agent_pb2, events_pb2
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]


async def wait_for(
    condition: Callable[[], object], *, within: float = 30.0, what: str = ""
) -> None:
    """``tests.conftest.wait_until``: generous deadlines for a loaded machine."""
    await wait_until(condition, within=within, what=what)


def uplink_settings(collector: str, state_dir: Path, **overrides: Any) -> UplinkSettings:
    """Settings for tests: quick reconnects and clock sync, otherwise the defaults."""
    base = UplinkSettings(
        collector=collector,
        state_dir=state_dir,
        reconnect_max_s=0.5,
        clock_sync_interval_s=1.0,
        operator_retry_s=0.5,
        response_timeout_s=20.0,
    )
    return replace(base, **overrides)


def record(i: int, node: str = "node-1") -> events_pb2.Event:
    """Event number ``i``: its pod uid ``rec-<i>`` identifies it at the collector."""
    return events_pb2.Event(
        pod=events_pb2.PodRef(uid=f"rec-{i}", namespace="default", name=f"pod-{i}", node=node),
        phase=events_pb2.PHASE_SCHEDULED,
        source=events_pb2.SOURCE_WATCH,
        time_ns=wall_ns(),
        monotonic_ns=mono_ns(),
    )


def record_ids(events: Sequence[events_pb2.Event]) -> list[int]:
    return [int(e.pod.uid.removeprefix("rec-")) for e in events if e.pod.uid.startswith("rec-")]


@dataclass
class Stack:
    settings: UplinkSettings
    agent_id: str
    spool: Spool
    clock: ClockSync
    batcher: Batcher
    uplink: Uplink


@contextlib.asynccontextmanager
async def running_uplink(
    settings: UplinkSettings, *, agent_id: str = "test-agent", node: str = "node-1"
) -> AsyncIterator[Stack]:
    spool = Spool.open(
        settings.state_dir / "spool" / agent_id,
        max_bytes=settings.spool_max_bytes,
        memory_batches=settings.memory_buffer,
    )
    clock = ClockSync()
    batcher = Batcher(
        spool,
        clock,
        max_records=settings.batch_max_events,
        flush_interval_s=settings.flush_interval_s,
    )
    uplink = Uplink(
        settings,
        agent_id=agent_id,
        node=node,
        spool=spool,
        clock=clock,
        security=ChannelSecurity.load(settings),
    )
    stack = Stack(settings, agent_id, spool, clock, batcher, uplink)
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(batcher.run(), name="batcher"),
            group.create_task(uplink.run(), name="uplink"),
        ]
        try:
            yield stack
        finally:
            for task in tasks:
                task.cancel()


# -- the feeder process -------------------------------------------------------------------


class Feeder:
    """Stands in for the node observers: numbered events at a steady rate."""

    def __init__(self, outbox: Outbox, *, first: int, count: int, rate: float) -> None:
        self.outbox = outbox
        self.first = first
        self.count = count
        self.rate = rate

    async def run(self) -> None:
        for i in range(self.first, self.first + self.count):
            self.outbox.put_event(record(i))
            await asyncio.sleep(1.0 / self.rate)
        assert isinstance(self.outbox, Batcher)
        # Counted once the batch is durable in the spool, not when taken from pending.
        while self.outbox.sealed_records < self.count:  # noqa: ASYNC110 - a test poll
            await asyncio.sleep(0.02)
        print(f"fed {self.count}", flush=True)
        await asyncio.Event().wait()

    def node_facts(self) -> agent_pb2.NodeFacts:
        return agent_pb2.NodeFacts(kernel_version="feeder", cpu_count=1)

    @property
    def tracked_pods(self) -> int:
        return 0


def feeder_factory(first: int, count: int, rate: float) -> ObserverFactory:
    @contextlib.asynccontextmanager
    async def factory(settings: AgentSettings, outbox: Outbox) -> AsyncIterator[Observer]:
        yield Feeder(outbox, first=first, count=count, rate=rate)

    return factory


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="feeder")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("agent_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    agent_args = [a for a in args.agent_args if a != "--"]
    settings = parse_run(agent_args, os.environ)
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run_agent(settings, feeder_factory(args.first, args.count, args.rate)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

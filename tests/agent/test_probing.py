"""The prober against real sockets: the real workload, and HTTP servers that count.

- brackets contain the listen time each real workload process logs itself;
- the shared rate budget holds (connections counted by the servers themselves,
  and refused attempts by the prober) and is shared fairly;
- waiting pods come before answering ones;
- an app answering 503 first: the bracket ends at the first 2xx;
- after the first response: one ProbeResult per attempt, one ``unavailable``
  event per outage; a silent server times out; forgetting stops probing.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.observing import ObserveSettings
from agent.outbox import RecordingOutbox
from agent.probing import Prober
from agent.transitions import ProbeTarget
from rtbench.clock import wall_ns
from rtbench.v1 import events_pb2

from .conftest import WaitFor, assert_midpoint, listen_in_bracket

P = events_pb2
LISTENING = re.compile(rb"epoch_ms=(\d+)\.(\d{3})")


def address(index: int) -> str:
    """A loopback address of this test run's own (the simulated cluster uses 127.1-254.x.x
    per node from random offsets; a random second octet keeps parallel runs apart)."""
    return f"127.{_OCTET}.{index // 250}.{index % 250 + 1}"


_OCTET = random.randrange(100, 250)


def ref(index: int) -> events_pb2.PodRef:
    return events_pb2.PodRef(uid=f"uid-{index}", namespace="t", name=f"pod-{index}", node="n")


class CountingServer:
    """A real HTTP server on its own address that counts connections and answers ``status``."""

    def __init__(self, ip: str, status: int = 503) -> None:
        self.ip = ip
        self.status = status
        self.silent = False
        self.connections = 0
        self.first_2xx_ns = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> CountingServer:
        self._server = await asyncio.start_server(self._serve, self.ip, port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def target(self) -> ProbeTarget:
        return ProbeTarget(self.ip, self.port, "/")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.silent:
                await reader.read()  # until the prober gives up
                return
            status = self.status
            if 200 <= status <= 299 and not self.first_2xx_ns:
                self.first_2xx_ns = wall_ns()
            writer.write(f"HTTP/1.0 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def settings(**overrides: Any) -> ObserveSettings:
    return ObserveSettings(node="n", **overrides)


Start = Callable[..., Prober]


@pytest.fixture
async def prober() -> AsyncIterator[tuple[Start, RecordingOutbox]]:
    outbox = RecordingOutbox()
    tasks: list[asyncio.Task[None]] = []

    def start(**overrides: Any) -> Prober:
        prober = Prober(outbox, settings(**overrides))
        tasks.append(asyncio.get_running_loop().create_task(prober.run(), name="prober"))
        return prober

    yield start, outbox
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception):
            raise outcome


@pytest.fixture
async def servers() -> AsyncIterator[list[CountingServer]]:
    started: list[CountingServer] = []
    yield started
    for server in started:
        await server.stop()


def events(outbox: RecordingOutbox, phase: int) -> list[events_pb2.Event]:
    return [e for e in outbox.events if e.phase == phase]


async def test_brackets_contain_the_workloads_own_listen_time(
    workload_binary: Path, prober: tuple[Start, RecordingOutbox], wait_for: WaitFor
) -> None:
    start, outbox = prober
    probe = start()
    pods = 12
    for index in range(pods):
        probe.track(ref(index), ProbeTarget(address(index), 8080, "/"), wall_ns())
    processes: list[asyncio.subprocess.Process] = []
    listened: dict[str, int] = {}

    async def launch(index: int) -> None:
        await asyncio.sleep(0.03 + 0.05 * index)  # each workload starts listening later
        process = await asyncio.create_subprocess_exec(
            str(workload_binary),
            "-a",
            address(index),
            "-p",
            "8080",
            stdout=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        assert process.stdout is not None
        match = LISTENING.search(await process.stdout.readline())
        assert match
        listened[f"uid-{index}"] = int(match[1]) * 1_000_000 + int(match[2]) * 1000

    try:
        await asyncio.gather(*(launch(i) for i in range(pods)))
        await wait_for(lambda: len(events(outbox, P.PHASE_FIRST_RESPONSE)) == pods, within=30)
    finally:
        for process in processes:
            process.terminate()
        await asyncio.gather(*(p.wait() for p in processes))
    for event in events(outbox, P.PHASE_FIRST_RESPONSE):
        begin = int(event.attributes["bracket_start_ns"])
        end = int(event.attributes["bracket_end_ns"])
        assert event.source == P.SOURCE_PROBE
        assert event.attributes["bracket_start_source"] == "connect_failure"
        assert int(event.attributes["refused"]) >= 1
        assert_midpoint(event)
        assert listen_in_bracket(listened[event.pod.uid], begin, end)
    summaries = [p for p in outbox.probes if p.ok]
    assert len(summaries) == pods and all(p.status_code == 200 for p in summaries)


@pytest.mark.parametrize("known_start", [True, False])
async def test_a_container_start_from_containerd_bounds_the_bracket(
    known_start: bool,
    prober: tuple[Start, RecordingOutbox],
    servers: list[CountingServer],
    wait_for: WaitFor,
) -> None:
    """Sparse probing (every 0.3 s) leaves a wide bracket; the container's task creation
    reported by containerd with its time cuts the bracket's start to that time (the app
    cannot have answered earlier). A start alone is no bound: the bracket keeps the last
    failure."""
    start, outbox = prober
    probe = start(probe_first_interval_s=0.3, probe_max_interval_s=0.3, probe_growth=1.0)
    server = CountingServer(address(400), status=200)
    await server.start()
    port = server.port
    await server.stop()  # refused from now on, until it starts again on the same port
    server.port = port
    servers.append(server)
    probe.track(ref(400), server.target, wall_ns())
    await wait_for(lambda: probe.attempts >= 2, within=10)  # refused: nothing listens
    await asyncio.sleep(0.1)  # well after the last refused attempt
    started = wall_ns()
    await server.start(port)
    if known_start:
        probe.hint_created("uid-400", started)
    probe.hint_started("uid-400")
    await wait_for(lambda: len(events(outbox, P.PHASE_FIRST_RESPONSE)) == 1, within=10)
    [event] = events(outbox, P.PHASE_FIRST_RESPONSE)
    begin = int(event.attributes["bracket_start_ns"])
    end = int(event.attributes["bracket_end_ns"])
    assert_midpoint(event)
    if known_start:
        assert event.attributes["bracket_start_source"] == "container_created"
        assert begin == started < end
    else:
        assert event.attributes["bracket_start_source"] == "connect_failure"
        assert begin <= started - 100_000_000 < end


@pytest.mark.parametrize("hint_comes", [True, False])
async def test_a_first_response_waits_for_containerds_word_of_the_start(
    hint_comes: bool,
    prober: tuple[Start, RecordingOutbox],
    servers: list[CountingServer],
    wait_for: WaitFor,
) -> None:
    """While a containerd reader is connected, a success that came before the container
    start was reported is held back until it is (then bounded by it), or until the wait
    ends (then reported as it was)."""
    start, outbox = prober
    probe = start(probe_first_interval_s=0.3, probe_max_interval_s=0.3, probe_growth=1.0)
    probe.start_hints = lambda: True
    probe.start_hint_wait_s = 30.0 if hint_comes else 0.3
    server = CountingServer(address(401), status=200)
    await server.start()
    port = server.port
    await server.stop()
    server.port = port
    servers.append(server)
    probe.track(ref(401), server.target, wall_ns())
    await wait_for(lambda: probe.attempts >= 2, within=10)  # refused: nothing listens
    await asyncio.sleep(0.1)
    started = wall_ns()
    await server.start(port)
    await wait_for(lambda: probe.first_responses == 1, within=10)
    if hint_comes:
        assert not events(outbox, P.PHASE_FIRST_RESPONSE), "held for the container start"
        probe.hint_created("uid-401", started)
    await wait_for(lambda: len(events(outbox, P.PHASE_FIRST_RESPONSE)) == 1, within=10)
    [event] = events(outbox, P.PHASE_FIRST_RESPONSE)
    assert_midpoint(event)
    begin = int(event.attributes["bracket_start_ns"])
    if hint_comes:
        assert event.attributes["bracket_start_source"] == "container_created"
        assert begin == started
    else:
        assert event.attributes["bracket_start_source"] == "connect_failure"
        assert begin <= started - 100_000_000


async def test_the_rate_budget_is_shared_fairly(
    prober: tuple[Start, RecordingOutbox], servers: list[CountingServer]
) -> None:
    start, _ = prober
    rate = 200.0
    for index in range(10):
        servers.append(await CountingServer(address(index)).start())
    refusing = [ProbeTarget(address(100 + i), 8080, "/") for i in range(10)]
    began = time.monotonic()
    probe = start(probe_rate=rate)
    for index, server in enumerate(servers):
        probe.track(ref(index), server.target, wall_ns())
    for index, target in enumerate(refusing):
        probe.track(ref(100 + index), target, wall_ns())
    await asyncio.sleep(2.0)
    for index in [*range(10), *range(100, 110)]:
        probe.forget(f"uid-{index}")
    elapsed = time.monotonic() - began
    counted = [s.connections for s in servers]
    # The bucket holds at most max(1, rate * 5 ms) = 1 token beyond the rate.
    assert probe.attempts <= rate * elapsed + 1
    assert probe.attempts >= 0.5 * rate * elapsed, "the budget was not used"
    answered_share = sum(counted) / probe.attempts
    assert 0.3 <= answered_share <= 0.7, (counted, probe.attempts)
    assert min(counted) >= 0.5 * max(counted), counted


async def test_waiting_pods_come_before_answering_ones(
    prober: tuple[Start, RecordingOutbox], servers: list[CountingServer], wait_for: WaitFor
) -> None:
    start, outbox = prober
    for index in range(4):
        servers.append(await CountingServer(address(index), status=200).start())
    probe = start(probe_rate=300.0, probe_after_success_interval_s=0.02)
    for index, server in enumerate(servers):
        probe.track(ref(index), server.target, wall_ns())
    await wait_for(lambda: len(events(outbox, P.PHASE_FIRST_RESPONSE)) == 4)
    for index in range(20):  # pods still waiting, wanting far more than the budget
        probe.track(ref(100 + index), ProbeTarget(address(100 + index), 8080, "/"), wall_ns())
    await asyncio.sleep(0.1)
    during = sum(s.connections for s in servers)
    await asyncio.sleep(1.0)
    assert sum(s.connections for s in servers) - during <= 4  # at most those in flight
    for index in range(20):
        probe.forget(f"uid-{100 + index}")
    await wait_for(lambda: sum(s.connections for s in servers) - during >= 40, within=10)


async def test_an_app_answering_errors_first(
    prober: tuple[Start, RecordingOutbox], servers: list[CountingServer], wait_for: WaitFor
) -> None:
    start, outbox = prober
    server = await CountingServer(address(0), status=503).start()
    servers.append(server)
    probe = start()
    probe.track(ref(0), server.target, wall_ns())
    await wait_for(lambda: server.connections >= 5)
    server.status = 200
    (event,) = await wait_for(lambda: events(outbox, P.PHASE_FIRST_RESPONSE))
    assert event.attributes["bracket_start_source"] == "http_failure"
    begin, end = int(event.attributes["bracket_start_ns"]), int(event.attributes["bracket_end_ns"])
    assert begin <= server.first_2xx_ns <= end == int(event.attributes["response_ns"])
    assert int(event.attributes["http_failures"]) == server.connections - 1
    assert event.attributes["attempts"] == str(server.connections)
    assert event.attributes["status_code"] == "200"


async def test_availability_after_the_first_response(
    prober: tuple[Start, RecordingOutbox], servers: list[CountingServer], wait_for: WaitFor
) -> None:
    start, outbox = prober
    server = await CountingServer(address(0), status=200).start()
    servers.append(server)
    probe = start(probe_after_success_interval_s=0.05)
    probe.track(ref(0), server.target, wall_ns())
    first = await wait_for(lambda: events(outbox, P.PHASE_FIRST_RESPONSE))
    assert first[0].attributes["bracket_start_source"] == "first_sight"
    await wait_for(lambda: len(outbox.probes) >= 4)
    assert all(p.ok and p.status_code == 200 and p.latency_ns > 0 for p in outbox.probes)

    for outage in (1, 2):
        await server.stop()
        seen = len(outbox.probes)
        await wait_for(lambda seen=seen: sum(not p.ok for p in outbox.probes[seen:]) >= 3)
        down = events(outbox, P.PHASE_UNAVAILABLE)
        assert len(down) == outage  # once per outage, not per failed attempt
        assert down[-1].reason == "econnrefused" and down[-1].uncertainty_ns > 0
        assert next(p.error for p in outbox.probes[seen:] if not p.ok) == "econnrefused"
        await server.start()
        back = len(outbox.probes)
        await wait_for(lambda back=back: any(p.ok for p in outbox.probes[back:]))
    assert len(events(outbox, P.PHASE_FIRST_RESPONSE)) == 1


async def test_a_silent_server_times_out_and_forgetting_stops(
    prober: tuple[Start, RecordingOutbox], servers: list[CountingServer], wait_for: WaitFor
) -> None:
    start, outbox = prober
    server = await CountingServer(address(0), status=200).start()
    server.silent = True
    servers.append(server)
    probe = start(probe_timeout_s=0.2)
    probe.track(ref(0), server.target, wall_ns())
    await asyncio.sleep(1.0)
    # One attempt at a time, each waiting out its timeout: a handful, not hundreds.
    assert 2 <= server.connections <= 8
    assert not events(outbox, P.PHASE_FIRST_RESPONSE)
    server.silent = False
    (event,) = await wait_for(lambda: events(outbox, P.PHASE_FIRST_RESPONSE))
    assert int(event.attributes["timeouts"]) >= 2
    probe.forget("uid-0")
    await asyncio.sleep(0.1)
    stopped_at = server.connections
    await asyncio.sleep(0.5)
    assert server.connections == stopped_at and probe.probing == 0


async def test_starts_seen_before_tracking_bound_the_first_response(
    prober: tuple[Start, RecordingOutbox], servers: list[CountingServer], wait_for: WaitFor
) -> None:
    """containerd's sandbox start and container create can arrive before the pod is tracked
    (its address not known yet): they are kept, and a first attempt that succeeds at once
    is bracketed from the later of them, not from the pod's first sight."""
    start, outbox = prober
    probe = start()
    first_sight = wall_ns() - 2_000_000_000
    sandbox, container = wall_ns() - 30_000_000, wall_ns() - 10_000_000  # create after start
    probe.hint_sandbox("uid-0", sandbox)
    probe.hint_created("uid-0", container)
    probe.hint_sandbox("uid-1", sandbox)
    probe.hint_created("uid-2", container)
    probe.forget("uid-2")  # deleted before it was tracked: its hints go with it
    for index in range(3):
        server = await CountingServer(address(index), status=200).start()
        servers.append(server)
        probe.track(ref(index), server.target, first_sight)
    await wait_for(lambda: len(events(outbox, P.PHASE_FIRST_RESPONSE)) == 3)
    found = {e.pod.uid: e for e in events(outbox, P.PHASE_FIRST_RESPONSE)}
    expected = {
        "uid-0": ("container_created", container),
        "uid-1": ("sandbox_started", sandbox),
        "uid-2": ("first_sight", first_sight),
    }
    for uid, (source, begin) in expected.items():
        event = found[uid]
        assert event.attributes["bracket_start_source"] == source, uid
        assert int(event.attributes["bracket_start_ns"]) == begin, uid
        assert event.attributes["address_source"] == "api_pod_ip"
        end = int(event.attributes["bracket_end_ns"])
        assert event.uncertainty_ns == (end - begin + 1) // 2


async def test_the_address_source_is_reported(
    prober: tuple[Start, RecordingOutbox], servers: list[CountingServer], wait_for: WaitFor
) -> None:
    start, outbox = prober
    probe = start()
    server = await CountingServer(address(0), status=200).start()
    servers.append(server)
    probe.track(ref(0), ProbeTarget(server.ip, server.port, "/", "cri"), wall_ns())
    (event,) = await wait_for(lambda: events(outbox, P.PHASE_FIRST_RESPONSE))
    assert event.attributes["address_source"] == "cri"
    assert event.attributes["pod_ip"] == server.ip

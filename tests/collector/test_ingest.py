"""The agent stream over real gRPC on loopback: exactly-once storage, acks, refusals, push-back."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from collector.app import Collector
from collector.journal import open_reader
from collector.settings import CollectorSettings
from rtbench.clock import wall_ns
from rtbench.influxd import free_port
from rtbench.protocol import REJECTED_SEQUENCE_KEY
from rtbench.v1 import agent_pb2, events_pb2
from tests.collector.agent_client import TestAgent, make_batch
from tests.collector.conftest import running, until

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = open_reader(path)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def scalar(path: Path, sql: str) -> int:
    return int(query(path, sql)[0][0])


async def test_three_concurrent_agents_with_resends_store_every_event_once(
    collector: Collector,
) -> None:
    batches, size = 30, 40

    async def one_agent(n: int) -> None:
        agent_id = f"agent-{n}"
        made = [make_batch(s, size, agent=agent_id) for s in range(1, batches + 1)]
        async with TestAgent(collector.address, agent_id, f"node-{n}") as agent:
            # Every fifth batch goes out twice while the first copy may be in flight.
            for i, batch in enumerate(made):
                await agent.send(batch)
                if i % 5 == 0:
                    await agent.send(batch)
                if i >= 8:
                    await agent.wait_acks([made[i - 8].sequence])
            await agent.wait_acks([b.sequence for b in made])
            # The second copy of a batch is acknowledged as a duplicate.
            assert agent.acks == {b.sequence: i % 5 == 0 for i, b in enumerate(made)}
        # Reconnect (as after a network cut) and resend the second half.
        again = TestAgent(collector.address, agent_id, f"node-{n}")
        try:
            welcome = await again.connect()
            assert welcome.committed_sequence == batches
            await again.send_all(made[batches // 2 :])
            assert all(again.acks[b.sequence] for b in made[batches // 2 :])
        finally:
            await again.close()

    await asyncio.gather(*(one_agent(n) for n in range(3)))
    path = collector.writer.journal.path
    assert scalar(path, "SELECT count(*) FROM events") == 3 * batches * size
    assert scalar(path, "SELECT count(DISTINCT attributes) FROM events") == 3 * batches * size
    assert scalar(path, "SELECT count(*) FROM batches") == 3 * batches
    committed = query(path, "SELECT agent_id, committed_sequence, node FROM agents ORDER BY 1")
    assert committed == [(f"agent-{n}", batches, f"node-{n}") for n in range(3)]
    assert collector.stats.batches >= 3 * batches
    assert collector.stats.duplicates >= 3 * (batches // 2)


async def test_welcome_tells_the_committed_sequence(collector: Collector) -> None:
    async with TestAgent(collector.address, "agent-w") as agent:
        await agent.send_all([make_batch(s, 2) for s in (1, 2, 3, 5)])
    again = TestAgent(collector.address, "agent-w")
    try:
        welcome = await again.connect()
        assert welcome.committed_sequence == 3  # 4 is missing: 5 is not contiguous
        assert welcome.collector_id == collector.writer.journal.collector_id
        assert abs(welcome.collector_time_ns - wall_ns()) < 60 * 10**9
        await again.send_all([make_batch(4, 2), make_batch(5, 2)])
        assert again.acks == {4: False, 5: True}
    finally:
        await again.close()


async def test_clock_sync_reply_and_half_close(collector: Collector) -> None:
    async with TestAgent(collector.address) as agent:
        t1, reply, t4 = await agent.clock_sync()
        assert reply.t1_ns == t1
        assert t1 <= reply.t2_ns <= reply.t3_ns <= t4
        # Half-closing with batches in flight: their acks still come, then OK.
        for s in range(1, 6):
            await agent.send(make_batch(s, 100))
        ended = await agent.finish()
        assert ended.code == OK
        assert set(agent.acks) == {1, 2, 3, 4, 5}


async def test_first_message_must_be_hello(collector: Collector) -> None:
    async with grpc.aio.insecure_channel(collector.address) as channel:
        from rtbench.v1 import agent_pb2_grpc

        stub = agent_pb2_grpc.AgentServiceStub(channel)
        call = stub.Connect()
        await call.write(agent_pb2.AgentMessage(batch=make_batch(1, 1)))
        assert await call.code() == INVALID
        assert await call.details() == "first message must be hello, got batch"
        call = stub.Connect()
        await call.write(agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="x")))
        assert await call.code() == INVALID
        assert "hello needs agent_id and node" in await call.details()
        # Bytes that are not an AgentMessage at all.
        raw = channel.stream_stream("/rtbench.v1.AgentService/Connect")
        garbage = raw()
        await garbage.write(b"\xff\xff\xff\xff not protobuf")
        assert await garbage.code() == INVALID
        assert "malformed AgentMessage" in await garbage.details()


def _no_uid(b: agent_pb2.Batch) -> None:
    b.events[1].pod.uid = ""


def _no_phase(b: agent_pb2.Batch) -> None:
    b.events[0].phase = events_pb2.PHASE_UNSPECIFIED


def _ancient(b: agent_pb2.Batch) -> None:
    b.events[2].time_ns = 631_152_000 * 10**9  # 1990


def _future(b: agent_pb2.Batch) -> None:
    b.clock.offset_ns = 3 * 86_400 * 10**9  # corrected time lands 3 days ahead


def _sequence_zero(b: agent_pb2.Batch) -> None:
    b.sequence = 0


def _too_many(b: agent_pb2.Batch) -> None:
    for _ in range(200):
        b.samples.add().time_ns = wall_ns()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_no_uid, "batch 1: event 1: pod.uid is empty"),
        (_no_phase, "batch 1: event 0: phase is unspecified"),
        (_ancient, "batch 1: event 2: time_ns 631152000000000000 (offset 0) is outside"),
        (_future, "is outside [2001-01-01, collector now + 1 day]"),
        (_sequence_zero, "batch sequence must be between 1 and 2^63-1, got 0"),
        (_too_many, "batch 1: 203 events+samples+probes, more than the limit 100"),
    ],
)
async def test_invalid_batch_is_refused_by_name_and_others_go_on(
    settings: CollectorSettings, spoil: Callable[[agent_pb2.Batch], None], message: str
) -> None:
    async with running(settings, max_batch_events=100) as collector:
        async with (
            TestAgent(collector.address, "bad") as bad,
            TestAgent(collector.address, "good") as good,
        ):
            await good.send_all([make_batch(1, 3)])
            batch = make_batch(1, 3)
            spoil(batch)
            await bad.send(batch)
            ended = await bad.ended_status()
            assert ended.code == INVALID
            assert message in ended.details
            # The agent learns which batch to set aside.
            assert ended.trailer[REJECTED_SEQUENCE_KEY] == str(batch.sequence)
            await good.send_all([make_batch(2, 3)])
        path = collector.writer.journal.path
        assert query(path, "SELECT DISTINCT agent_id FROM events") == [("good",)]
        assert collector.stats.rejected == 1


async def test_oversized_message_is_resource_exhausted_and_others_go_on(
    settings: CollectorSettings,
) -> None:
    async with running(settings, max_message_bytes=65536) as collector:
        async with (
            TestAgent(collector.address, "big") as big,
            TestAgent(collector.address, "small") as small,
        ):
            huge = make_batch(1, 2000)  # ~150 kB
            assert huge.ByteSize() > 65536
            await big.send(huge)
            ended = await big.ended_status()
            assert ended.code == EXHAUSTED
            assert "larger than max" in ended.details
            await small.send_all([make_batch(s, 50) for s in range(1, 6)])
        assert scalar(collector.writer.journal.path, "SELECT count(*) FROM events") == 250


async def test_garbage_on_the_port_does_not_disturb_the_service(collector: Collector) -> None:
    host, port = collector.address.rsplit(":", 1)
    payloads = [
        bytes(range(256)) * 64,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00garbage" * 50,
    ]

    def poke(payload: bytes) -> bytes:
        """Sends the bytes and reads until the collector hangs up (which it may do early)."""
        answer = b""
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                while chunk := sock.recv(65536):
                    answer += chunk
            except (ConnectionResetError, BrokenPipeError, OSError):
                pass
        return answer

    async with TestAgent(collector.address, "steady") as agent:
        for i, payload in enumerate(payloads):
            answer = await asyncio.to_thread(poke, payload)
            assert not answer.startswith(b"HTTP/1.1 2")  # never taken for a request
            await agent.send_all([make_batch(i + 1, 20)])
    async with grpc.aio.insecure_channel(collector.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert scalar(collector.writer.journal.path, "SELECT count(*) FROM events") == 60


async def test_push_back_when_the_journal_is_backed_up(settings: CollectorSettings) -> None:
    async with running(settings, max_pending_batches=2) as collector:
        release = threading.Event()
        made = [make_batch(s, 5) for s in range(1, 8)]
        blocker: asyncio.Task[bool] | None = None
        try:
            async with TestAgent(collector.address, "pushed") as agent:
                # Occupy the journal thread, as a slow disk would.
                blocker = asyncio.create_task(collector.writer.call(release.wait, 60))
                for batch in made:
                    await agent.send(batch)
                await until(lambda: collector.stats.pushed_back >= 1, what="push back")
                release.set()
                ended = await agent.ended_status()
                assert ended.code == EXHAUSTED
                assert "push back" in ended.details
                # What was queued before the push back is still committed and acked:
                # the two in the queue and the one the writer already holds.
                assert set(agent.acks) == {1, 2, 3}
        finally:
            release.set()
            if blocker is not None:
                await blocker
        async with TestAgent(collector.address, "pushed") as agent:
            await agent.send_all(made, window=2)
            assert [s for s, dup in sorted(agent.acks.items()) if dup] == [1, 2, 3]
        assert scalar(collector.writer.journal.path, "SELECT count(*) FROM events") == 35


async def test_push_back_when_the_export_is_behind(settings: CollectorSettings) -> None:
    dead_influx = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with running(
        settings, influx_url=dead_influx, influx_db="rtbench", max_export_backlog=100
    ) as collector:
        async with TestAgent(collector.address, "exporting") as agent:
            seq = 0

            async def refused() -> bool:
                nonlocal seq
                seq += 1
                await agent.send(make_batch(seq, 20))
                await agent.wait(lambda: seq in agent.acks or agent.ended is not None)
                return agent.ended is not None

            await until(refused, within=120, every=0.1, what="push back")
            assert agent.ended is not None
            assert agent.ended.code == EXHAUSTED
            assert "export backlog" in agent.ended.details
        stored = scalar(collector.writer.journal.path, "SELECT count(*) FROM events")
        assert stored >= 100
        assert stored == 20 * len(agent.acks)


async def test_shutdown_acks_what_was_received_and_ends_streams(
    settings: CollectorSettings,
) -> None:
    collector = Collector(settings)
    await collector.start()
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        agent = TestAgent(collector.address, "leaving")
        await agent.connect()
        made = [make_batch(s, 50) for s in range(1, 21)]
        for batch in made:
            await agent.send(batch)
        await agent.wait_acks([1])
        stop.set()
        ended = await agent.ended_status()
        assert ended.code == grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(task, 60)
        await agent.close()
        stored = {int(s) for (s,) in query(settings.journal, "SELECT sequence FROM batches")}
        # Every acked batch is stored; nothing stored was left unacknowledged.
        assert stored == set(agent.acks)
    finally:
        await collector.close()

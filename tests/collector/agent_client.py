"""A small agent for the collector tests: the real wire protocol over a real gRPC channel.

The agent package is built separately (and the collector must not import it), so
the tests speak AgentService themselves: Hello, Welcome, batches with a window of
unacknowledged ones, acks, clock sync. ``make_batch`` builds batches with known
content, so the tests can say exactly what the journal must hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from rtbench.clock import wall_ns
from rtbench.v1 import agent_pb2, agent_pb2_grpc, events_pb2

__all__ = ["SEND_LIMIT", "StreamEnded", "TestAgent", "make_batch", "metadata"]

SEND_LIMIT = 64 * 2**20
"""The client may send larger messages than the collector accepts (oversize tests)."""

_ids = itertools.count(1)


def metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return None if token is None else (("authorization", f"Bearer {token}"),)


def make_batch(
    sequence: int,
    events: int,
    *,
    agent: str = "agent",
    run_id: str = "run-1",
    pods: int = 10,
    time_ns: int | None = None,
    offset_ns: int | None = 0,
    uncertainty_ns: int = 1000,
    samples: int = 0,
    probes: int = 0,
) -> agent_pb2.Batch:
    """A batch whose events have unique (agent, sequence, index) in their attributes."""
    base = wall_ns() if time_ns is None else time_ns
    batch = agent_pb2.Batch(sequence=sequence, sealed_ns=base)
    if offset_ns is not None:
        batch.clock.offset_ns = offset_ns
        batch.clock.uncertainty_ns = uncertainty_ns
        batch.clock.measured_at_ns = base
        batch.clock.samples = 4
    for i in range(events):
        ev = batch.events.add()
        k = (sequence * 7 + i) % pods
        ev.pod.uid = f"{run_id}-uid-{k}"
        ev.pod.name = f"pod-{k}"
        ev.pod.namespace = "bench"
        ev.pod.run_id = run_id
        ev.phase = events_pb2.PHASE_SCHEDULED + (i % 8)  # type: ignore[assignment]
        ev.source = events_pb2.SOURCE_WATCH
        ev.time_ns = base + i
        ev.monotonic_ns = i + 1
        ev.uncertainty_ns = 10
        ev.attributes["key"] = f"{agent}/{sequence}/{i}"
    for i in range(samples):
        s = batch.samples.add()
        s.time_ns = base + i
        s.mem_total_bytes = 8 << 30
        s.mem_available_bytes = 4 << 30
        s.cpu_busy = 0.25
    for i in range(probes):
        p = batch.probes.add()
        p.pod.uid = f"{run_id}-uid-{i % pods}"
        p.pod.run_id = run_id
        p.time_ns = base + i
        p.ok = True
        p.latency_ns = 1000
        p.status_code = 200
    return batch


class StreamEnded(Exception):
    """The collector ended the stream; carries the status."""

    def __init__(self, code: Any, details: str, trailer: tuple[Any, ...] = ()) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.trailer = dict(trailer)


@dataclass
class Welcome:
    collector_id: str
    committed_sequence: int
    collector_time_ns: int


class TestAgent:
    """One Connect stream: ``await agent.connect()``, send, wait for acks, ``close()``."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        target: str,
        agent_id: str | None = None,
        node: str = "node-1",
        *,
        token: str | None = None,
        credentials: Any = None,
    ) -> None:
        self.target = target
        self.agent_id = agent_id or f"agent-{next(_ids)}"
        self.node = node
        self.token = token
        self.credentials = credentials
        self.acks: dict[int, bool] = {}
        self.clock_replies: dict[int, tuple[events_pb2.ClockSyncReply, int]] = {}
        self.ended: StreamEnded | None = None
        self._changed = asyncio.Event()
        self._channel: Any = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> Welcome:
        options = [("grpc.max_send_message_length", SEND_LIMIT)]
        if self.credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self.target, self.credentials, options=options)
        stub = agent_pb2_grpc.AgentServiceStub(self._channel)
        self._call = stub.Connect(metadata=metadata(self.token))
        hello = agent_pb2.Hello(agent_id=self.agent_id, node=self.node, agent_version="test")
        hello.protocol = "v1"
        hello.node_facts.cpu_count = 2
        try:
            await self._call.write(agent_pb2.AgentMessage(hello=hello))
            first = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise StreamEnded(exc.code(), exc.details() or "") from None
        if first is grpc.aio.EOF:
            raise StreamEnded(await self._call.code(), await self._call.details())
        self._reader = asyncio.create_task(self._read(), name=f"test-agent:{self.agent_id}")
        w = first.welcome
        return Welcome(w.collector_id, w.committed_sequence, w.collector_time_ns)

    async def _read(self) -> None:
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    break
                kind = msg.WhichOneof("body")
                if kind == "ack":
                    self.acks[msg.ack.sequence] = msg.ack.duplicate
                elif kind == "clock_sync":
                    self.clock_replies[msg.clock_sync.id] = (msg.clock_sync, wall_ns())
                self._changed.set()
        except grpc.aio.AioRpcError:
            pass
        self.ended = StreamEnded(
            await self._call.code(),
            await self._call.details(),
            tuple(await self._call.trailing_metadata() or ()),
        )
        self._changed.set()

    async def send(self, batch: agent_pb2.Batch) -> None:
        await self.send_raw(agent_pb2.AgentMessage(batch=batch))

    async def send_raw(self, message: agent_pb2.AgentMessage) -> None:
        try:
            await self._call.write(message)
        except asyncio.InvalidStateError:
            # The call ended between our last read and this write: its status says why.
            raise StreamEnded(await self._call.code(), await self._call.details()) from None

    async def wait(self, predicate: Any, within: float = 120.0) -> None:
        """Until predicate() is true; raises StreamEnded if the stream ends first."""
        async with asyncio.timeout(within):
            while not predicate():
                if self.ended is not None:
                    raise self.ended
                self._changed.clear()
                await self._changed.wait()

    async def wait_acks(self, sequences: Sequence[int], within: float = 120.0) -> None:
        await self.wait(lambda: all(s in self.acks for s in sequences), within)

    async def send_all(self, batches: Sequence[agent_pb2.Batch], window: int = 8) -> None:
        """Sends every batch with at most ``window`` unacknowledged, waits for all acks."""
        for i, batch in enumerate(batches):
            if i >= window:
                await self.wait_acks([batches[i - window].sequence])
            await self.send(batch)
        await self.wait_acks([b.sequence for b in batches])

    async def clock_sync(self) -> tuple[int, events_pb2.ClockSyncReply, int]:
        """One exchange: (t1, reply, t4)."""
        rid = next(_ids)
        t1 = wall_ns()
        req = events_pb2.ClockSyncRequest(id=rid, t1_ns=t1)
        await self._call.write(agent_pb2.AgentMessage(clock_sync=req))
        await self.wait(lambda: rid in self.clock_replies)
        reply, t4 = self.clock_replies[rid]
        return t1, reply, t4

    async def finish(self) -> StreamEnded:
        """Half-closes the stream and waits for the collector to end it."""
        await self._call.done_writing()
        return await self.ended_status()

    async def ended_status(self, within: float = 120.0) -> StreamEnded:
        """Waits until the collector ends the stream and returns its status."""
        try:
            await self.wait(lambda: False, within)
        except StreamEnded as ended:
            return ended
        raise AssertionError("stream did not end")

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> TestAgent:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

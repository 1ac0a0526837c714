"""A real AgentService on loopback that journals in memory: the agent's test collector.

The agent must not import the collector (import-linter forbids it), and its
tests need a collector they can misuse: stop and restart on the same port,
delay or reorder acks, refuse with a status code, shift its clock by a known
amount. This is a grpc.aio server speaking rtbench.v1 like the real collector
does: Hello → Welcome(committed_sequence), each batch "committed" (kept in a
dict keyed by (agent id, sequence), so a resend is stored once and acked with
``duplicate=true``), then acked; clock-sync requests answered with t2 stamped on
receipt and t3 just before the reply is written, both plus ``clock_shift_ns``.
The journal survives ``stop()``/``start()`` like the real collector's SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from rtbench.clock import wall_ns
from rtbench.influxd import free_port
from rtbench.protocol import REJECTED_SEQUENCE_KEY
from rtbench.v1 import agent_pb2, agent_pb2_grpc, events_pb2

__all__ = ["FakeCollector", "ServerTls"]


@dataclass(frozen=True)
class ServerTls:
    """PEM server certificate and key; with ``client_ca`` client certificates are required."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


class FakeCollector:
    """Start with ``async with FakeCollector() as fake``; ``fake.address`` is HOST:PORT."""

    def __init__(
        self,
        *,
        port: int | None = None,
        token: str | None = None,
        clock_shift_ns: int = 0,
        tls: ServerTls | None = None,
        collector_id: str = "fake-collector",
    ) -> None:
        self.port = port or free_port()
        self.token = token
        self.clock_shift_ns = clock_shift_ns
        self.tls = tls
        self.collector_id = collector_id
        # Behaviour the test may change at any time.
        self.ack_delay_s = 0.0
        self.ack_reversed_groups = 1
        """>1: hold acks until this many (or 0.2 s passed), then send them newest first."""
        self.refuse: grpc.StatusCode | None = None
        self.lose_batches = False
        """True: batches are received but neither committed nor acked (a collector that
        dies before its commit); the agent must resend them."""
        self.lose_sequences: set[int] = set()
        """Sequences to lose like that once each."""
        self.reject_sequences: set[int] = set()
        """Sequences refused as invalid, like the real collector refuses a bad batch:
        INVALID_ARGUMENT with the sequence in the trailing metadata."""
        # The journal.
        self.committed: dict[tuple[str, int], agent_pb2.Batch] = {}
        self.received: list[tuple[str, int]] = []
        self.hellos: list[agent_pb2.Hello] = []
        self.acks_sent: list[tuple[int, bool]] = []
        self.rejected_tokens = 0
        self.streams = 0
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(_Servicer(self), server)
        if self.tls is None:
            server.add_insecure_port(self.address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(self.tls.key, self.tls.cert)],
                root_certificates=self.tls.client_ca,
                require_client_auth=self.tls.client_ca is not None,
            )
            server.add_secure_port(self.address, credentials)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Cut every stream and close the port (the journal stays)."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    async def __aenter__(self) -> FakeCollector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- reading the journal -----------------------------------------------------

    def committed_sequence(self, agent_id: str) -> int:
        """Highest sequence of ``agent_id`` held contiguously from 1."""
        seq = 0
        while (agent_id, seq + 1) in self.committed:
            seq += 1
        return seq

    def batches(self) -> list[agent_pb2.Batch]:
        return [self.committed[key] for key in sorted(self.committed)]

    def events(self) -> list[events_pb2.Event]:
        return [event for batch in self.batches() for event in batch.events]

    def event_count(self) -> int:
        return sum(len(batch.events) for batch in self.committed.values())

    def _commit(self, agent_id: str, batch: agent_pb2.Batch) -> bool:
        key = (agent_id, batch.sequence)
        if key in self.committed:
            return False
        self.committed[key] = batch
        return True


class _Servicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, fake: FakeCollector) -> None:
        self.fake = fake

    async def Connect(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
        fake = self.fake
        if fake.token is not None:
            metadata = dict(context.invocation_metadata() or ())
            if metadata.get("authorization") != f"Bearer {fake.token}":
                fake.rejected_tokens += 1
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong or missing token")
        if fake.refuse is not None:
            await context.abort(fake.refuse, "refused by the test")
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello must come first")
        hello = first.hello
        fake.hellos.append(hello)
        fake.streams += 1
        await context.write(
            agent_pb2.CollectorMessage(
                welcome=agent_pb2.Welcome(
                    collector_id=fake.collector_id,
                    committed_sequence=fake.committed_sequence(hello.agent_id),
                    collector_time_ns=wall_ns() + fake.clock_shift_ns,
                )
            )
        )
        stream = _Stream(fake, context, hello.agent_id)
        writer = asyncio.create_task(stream.write_loop(), name="fake-collector-writer")
        try:
            await stream.read_loop()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            for task in stream.tasks:
                task.cancel()


class _Stream:
    """One agent stream: a reader that commits, a single writer that sends replies."""

    def __init__(self, fake: FakeCollector, context: Any, agent_id: str) -> None:
        self.fake = fake
        self.context = context
        self.agent_id = agent_id
        self.out: asyncio.Queue[agent_pb2.CollectorMessage] = asyncio.Queue()
        self.held: list[agent_pb2.Ack] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def read_loop(self) -> None:
        while True:
            message = await self.context.read()
            t2 = wall_ns() + self.fake.clock_shift_ns
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("body")
            if kind == "clock_sync":
                request = message.clock_sync
                reply = events_pb2.ClockSyncReply(id=request.id, t1_ns=request.t1_ns, t2_ns=t2)
                self.out.put_nowait(agent_pb2.CollectorMessage(clock_sync=reply))
            elif kind == "batch":
                self.fake.received.append((self.agent_id, message.batch.sequence))
                seq = message.batch.sequence
                if seq in self.fake.reject_sequences:
                    await self.context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"batch {seq}: refused by the test",
                        ((REJECTED_SEQUENCE_KEY, str(seq)),),
                    )
                if seq in self.fake.lose_sequences:
                    self.fake.lose_sequences.discard(seq)
                elif not self.fake.lose_batches:
                    self._spawn(self._commit_and_ack(message.batch))
            else:
                await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected {kind}")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _commit_and_ack(self, batch: agent_pb2.Batch) -> None:
        stored = self.fake._commit(self.agent_id, batch)
        if self.fake.ack_delay_s:
            await asyncio.sleep(self.fake.ack_delay_s)
        ack = agent_pb2.Ack(sequence=batch.sequence, duplicate=not stored)
        if self.fake.ack_reversed_groups <= 1:
            self.out.put_nowait(agent_pb2.CollectorMessage(ack=ack))
            return
        self.held.append(ack)
        if len(self.held) == 1:
            self._spawn(self._release_later())
        if len(self.held) >= self.fake.ack_reversed_groups:
            self._release()

    async def _release_later(self) -> None:
        await asyncio.sleep(0.2)
        self._release()

    def _release(self) -> None:
        for ack in reversed(self.held):
            self.out.put_nowait(agent_pb2.CollectorMessage(ack=ack))
        self.held.clear()

    async def write_loop(self) -> None:
        while True:
            message = await self.out.get()
            if message.WhichOneof("body") == "clock_sync":
                message.clock_sync.t3_ns = wall_ns() + self.fake.clock_shift_ns
            elif message.WhichOneof("body") == "ack":
                self.fake.acks_sent.append((message.ack.sequence, message.ack.duplicate))
            await self.context.write(message)

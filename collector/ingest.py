"""The agents' uplink: validate each batch, commit it to the journal, then acknowledge it.

An agent keeps a batch until it is acknowledged, so an Ack is a promise that the
batch is on disk. ``AgentIngest.Connect`` serves one agent stream: Hello first
(else INVALID_ARGUMENT), Welcome back, then batches and clock-sync requests in
any order. Several batches of one agent may be in flight; acks go out as their
commits finish, which is the order the stream sent the batches in: the one
writer thread commits its queue first in, first out.

``Writer`` owns the journal: it runs every journal call in one dedicated thread
(the event loop keeps serving) and commits all batches that queued up while the
previous commit was fsyncing in one transaction (group commit). Its queue is
bounded; when it is full, or the exporter is too far behind, a new batch is
refused with RESOURCE_EXHAUSTED and the agent retries later with its data intact.

A batch that fails validation (empty pod UID, unspecified phase, a time outside
[2001-01-01, now + 1 day] after clock correction, too many records, sequence 0)
aborts the stream with INVALID_ARGUMENT naming the record, and the batch's
sequence in the trailing metadata (``rtbench.protocol.REJECTED_SEQUENCE_KEY``)
so the agent sets that batch aside rather than resending it forever; the
collector never half-stores a batch. Nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from rtbench.clock import wall_ns
from rtbench.protocol import PROTOCOL, REJECTED_SEQUENCE_KEY
from rtbench.v1 import agent_pb2, events_pb2

from .errors import InvalidBatch, InvalidRequest, JournalError, Overloaded, ShuttingDown
from .journal import Journal
from .progress import ProgressHub

__all__ = ["MIN_TIME_NS", "AgentIngest", "IngestStats", "Writer", "validate_batch"]

log = logging.getLogger("collector.ingest")

T = TypeVar("T")

MIN_TIME_NS = 978_307_200 * 10**9
"""2001-01-01T00:00:00Z: anything earlier is an unset or broken clock."""
MAX_AHEAD_NS = 86_400 * 10**9
"""One day past the collector's clock: more is a broken clock, not skew."""
INT64_MAX = 2**63 - 1
MAX_GROUP_RECORDS = 50_000
"""Records per transaction: keeps one commit (and the acks waiting on it) short."""


SILENCE_INTERVALS = 3
"""An agent sends at least a clock-sync exchange every interval; missing three in a row is
no scheduling hiccup: the agent is stopped, hung or cut off."""
DEFAULT_CLOCK_SYNC_NS = 10 * 10**9
"""The agent's default --clock-sync-interval, for agents whose hello does not say theirs."""


@dataclass
class IngestStats:
    batches: int = 0
    duplicates: int = 0
    records: int = 0
    commits: int = 0
    rejected: int = 0
    pushed_back: int = 0
    commit_failures: int = 0
    connected: dict[str, int] = field(default_factory=dict)
    heard: dict[str, int] = field(default_factory=dict)
    """Per agent id, collector time of the last message of any kind on its stream."""
    silence_bounds: dict[str, int] = field(default_factory=dict)
    """Per agent id, how long it may be silent before it is stale (ns): 3 x the clock-sync
    interval its hello announced (SILENCE_INTERVALS x DEFAULT_CLOCK_SYNC_INTERVAL_NS when
    it announced none)."""

    def stale(self, agent_id: str, now_ns: int) -> bool:
        """Connected, yet silent for longer than its bound (SIGSTOPped, hung, link black-holed)."""
        heard = self.heard.get(agent_id)
        bound = self.silence_bounds.get(agent_id, SILENCE_INTERVALS * DEFAULT_CLOCK_SYNC_NS)
        return agent_id in self.connected and heard is not None and now_ns - heard > bound


def validate_batch(batch: agent_pb2.Batch, *, max_records: int, now_ns: int) -> None:
    """Raises InvalidBatch naming the first problem; accepts unknown phases and sources."""
    seq = batch.sequence
    if not 1 <= seq <= INT64_MAX:
        raise InvalidBatch(f"batch sequence must be between 1 and 2^63-1, got {seq}")
    events, samples, probes = batch.events, batch.samples, batch.probes
    count = len(events) + len(samples) + len(probes)
    if count > max_records:
        raise InvalidBatch(
            f"batch {seq}: {count} events+samples+probes, more than the limit {max_records}"
        )
    offset = 0
    if batch.HasField("clock"):
        offset = batch.clock.offset_ns
        if batch.clock.uncertainty_ns < 0:
            raise InvalidBatch(f"batch {seq}: clock uncertainty_ns is negative")
    # Compare raw times with bounds shifted by the offset: one subtraction per batch.
    low, high = MIN_TIME_NS - offset, now_ns + MAX_AHEAD_NS - offset
    for i, ev in enumerate(events):
        if not ev.pod.uid:
            raise InvalidBatch(f"batch {seq}: event {i}: pod.uid is empty")
        if ev.phase == events_pb2.PHASE_UNSPECIFIED:
            raise InvalidBatch(f"batch {seq}: event {i}: phase is unspecified")
        if not low <= ev.time_ns <= high:
            raise InvalidBatch(_bad_time(seq, "event", i, ev.time_ns, offset))
        if ev.uncertainty_ns < 0:
            raise InvalidBatch(f"batch {seq}: event {i}: uncertainty_ns is negative")
    for i, sample in enumerate(samples):
        if not low <= sample.time_ns <= high:
            raise InvalidBatch(_bad_time(seq, "sample", i, sample.time_ns, offset))
    for i, probe in enumerate(probes):
        if not probe.pod.uid:
            raise InvalidBatch(f"batch {seq}: probe {i}: pod.uid is empty")
        if not low <= probe.time_ns <= high:
            raise InvalidBatch(_bad_time(seq, "probe", i, probe.time_ns, offset))


def _bad_time(seq: int, kind: str, index: int, time_ns: int, offset: int) -> str:
    return (
        f"batch {seq}: {kind} {index}: time_ns {time_ns} (offset {offset}) is outside "
        "[2001-01-01, collector now + 1 day]"
    )


@dataclass
class _Pending:
    agent_id: str
    batch: agent_pb2.Batch
    done: asyncio.Future[bool]


class Writer:
    """Serialises every journal call on one thread and group-commits batches."""

    def __init__(
        self,
        journal: Journal,
        *,
        max_pending: int,
        progress: ProgressHub | None = None,
        stats: IngestStats | None = None,
    ) -> None:
        self.journal = journal
        self.progress = progress
        self.stats = stats or IngestStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        # None wakes run() when shutdown begins.
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue(maxsize=max_pending)
        self._accepting = True
        self.export_backlog = 0
        self.max_export_backlog = 0

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, agent_id: str, batch: agent_pb2.Batch) -> asyncio.Future[bool]:
        """Queues a batch; the future is True when stored, False for a duplicate.

        Raises Overloaded (queue full, export backlog over its limit) or ShuttingDown.
        """
        if not self._accepting:
            raise ShuttingDown("collector is shutting down")
        if 0 < self.max_export_backlog < self.export_backlog:
            raise Overloaded(
                f"export backlog {self.export_backlog} rows is over {self.max_export_backlog}"
            )
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(agent_id, batch, done))
        except asyncio.QueueFull:
            raise Overloaded(f"{self._queue.maxsize} batches waiting for the journal") from None
        return done

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a journal function on the journal thread, in order with the commits."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def run(self) -> None:
        """Commits queued batches until ``stop_accepting()`` and the queue is empty."""
        while self._accepting or not self._queue.empty():
            first = await self._queue.get()
            if first is None:
                continue
            group = [first]
            records = _records(first.batch)
            while records < MAX_GROUP_RECORDS and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    group.append(item)
                    records += _records(item.batch)
            await self._commit(group, records)

    async def _commit(self, group: list[_Pending], records: int) -> None:
        items = [(p.agent_id, p.batch) for p in group]
        try:
            stored = await self.call(self.journal.commit_batches, items, wall_ns())
        except JournalError as exc:
            self.stats.commit_failures += 1
            log.error("journal commit of %d batches failed: %s", len(group), exc)
            for p in group:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        self.stats.commits += 1
        self.stats.batches += len(group)
        self.stats.records += records
        for p, fresh in zip(group, stored, strict=True):
            if not fresh:
                self.stats.duplicates += 1
            if not p.done.done():
                p.done.set_result(fresh)
        if self.progress is not None and not self.progress.idle:
            self.progress.observe(self._watched_records(group, stored))

    def _watched_records(
        self, group: Sequence[_Pending], stored: Sequence[bool]
    ) -> list[tuple[str, int, str]]:
        assert self.progress is not None
        watched = self.progress.is_watched
        return [
            (ev.pod.run_id, ev.phase, ev.pod.uid)
            for p, fresh in zip(group, stored, strict=True)
            if fresh
            for ev in p.batch.events
            if ev.pod.run_id and watched(ev.pod.run_id)
        ]

    def stop_accepting(self) -> None:
        """Stage one of shutdown: refuse new batches, keep committing queued ones."""
        self._accepting = False
        # Wake run() if it waits on an empty queue, so it can return.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def close(self) -> None:
        """Waits for the journal thread to finish its current call, then closes the journal."""
        self._executor.shutdown(wait=True)
        self.journal.close()


def _records(batch: agent_pb2.Batch) -> int:
    return len(batch.events) + len(batch.samples) + len(batch.probes)


def _decode(raw: bytes) -> agent_pb2.AgentMessage:
    try:
        return agent_pb2.AgentMessage.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequest(f"malformed AgentMessage ({len(raw)} bytes): {exc}") from None


class AgentIngest:
    """The AgentService servicer.

    Registered through ``handler()`` rather than the generated helper: it takes
    raw bytes and decodes them itself, so a malformed message is answered
    INVALID_ARGUMENT instead of the UNKNOWN a failing gRPC deserializer gives.
    """

    def __init__(self, writer: Writer, *, max_batch_events: int) -> None:
        self._writer = writer
        self._max_records = max_batch_events
        self._stopping = asyncio.Event()
        self.stats = writer.stats

    def handler(self) -> Any:
        """The generic RPC handler for ``rtbench.v1.AgentService``."""
        return grpc.method_handlers_generic_handler(
            "rtbench.v1.AgentService",
            {
                "Connect": grpc.stream_stream_rpc_method_handler(
                    self.Connect,
                    request_deserializer=None,
                    response_serializer=agent_pb2.CollectorMessage.SerializeToString,
                )
            },
        )

    def stop(self) -> None:
        """Every stream stops reading, waits for its in-flight acks, and ends UNAVAILABLE."""
        self._stopping.set()

    async def Connect(  # the gRPC method name
        self, requests: AsyncIterator[bytes], context: Any
    ) -> None:
        if self._stopping.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector is shutting down")
        raw = await anext(aiter(requests), None)
        if raw is None:
            return
        try:
            first = _decode(raw)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        kind = first.WhichOneof("body")
        if kind != "hello":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"first message must be hello, got {kind}"
            )
        hello = first.hello
        if not hello.agent_id or not hello.node:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello needs agent_id and node")
        if hello.protocol not in ("", PROTOCOL):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol {hello.protocol!r} not spoken here ({PROTOCOL})",
            )
        try:
            committed = await self._writer.call(self._writer.journal.upsert_agent, hello, wall_ns())
        except JournalError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"journal: {exc}")
        welcome = agent_pb2.Welcome(
            collector_id=self._writer.journal.collector_id,
            committed_sequence=committed,
            collector_time_ns=wall_ns(),
        )
        await context.write(agent_pb2.CollectorMessage(welcome=welcome))
        agent_id = hello.agent_id
        interval_ns = (hello.clock_sync_interval_ms * 10**6) or DEFAULT_CLOCK_SYNC_NS
        self.stats.silence_bounds[agent_id] = SILENCE_INTERVALS * interval_ns
        self.stats.heard[agent_id] = wall_ns()
        connected = self.stats.connected
        connected[agent_id] = connected.get(agent_id, 0) + 1
        log.info(
            "agent %s connected from %s (node %s, version %s, committed %d)",
            agent_id,
            context.peer(),
            hello.node,
            hello.agent_version or "?",
            committed,
        )
        session = _Session(self, agent_id, requests, context)
        try:
            await session.run()
        finally:
            connected[agent_id] -= 1
            if not connected[agent_id]:
                del connected[agent_id]
            log.info("agent %s disconnected: %s", agent_id, session.outcome)


_END = object()


@dataclass(frozen=True)
class _ClockReply:
    request: events_pb2.ClockSyncRequest
    t2: int


class _Session:
    """One agent stream after the Welcome: a reader task and this task writing replies."""

    def __init__(
        self,
        ingest: AgentIngest,
        agent_id: str,
        requests: AsyncIterator[bytes],
        context: Any,
    ) -> None:
        self._ingest = ingest
        self._agent_id = agent_id
        self._requests = requests
        self._context = context
        self._out: asyncio.Queue[object] = asyncio.Queue()
        self._inflight: set[asyncio.Future[bool]] = set()
        self._problem: tuple[Any, str] | None = None
        self._rejected: int | None = None
        self._failed = asyncio.Event()
        self.outcome = "stream closed"

    async def run(self) -> None:
        reader = asyncio.create_task(self._read(), name=f"ingest-read:{self._agent_id}")
        sender = asyncio.create_task(self._send(), name=f"ingest-send:{self._agent_id}")
        stopping = asyncio.create_task(self._ingest._stopping.wait())
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait({reader, sender, stopping, failed}, return_when="FIRST_COMPLETED")
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                if self._problem is None:
                    self._problem = (grpc.StatusCode.UNAVAILABLE, "collector is shutting down")
            elif reader.exception() is not None:
                exc = reader.exception()
                self._problem = (grpc.StatusCode.INVALID_ARGUMENT, f"bad stream: {exc}")
            if not sender.done():
                # Batches already handed to the writer still get their acks.
                if self._inflight:
                    await asyncio.wait(self._inflight)
                self._out.put_nowait(_END)
                await sender
            else:
                sender.result()
        finally:
            for task in (reader, sender, stopping, failed):
                task.cancel()
        if self._problem is not None:
            code, details = self._problem
            self.outcome = f"{code.name}: {details}"
            trailer: tuple[tuple[str, str], ...] = ()
            if self._rejected is not None:
                # Tells the agent which batch to set aside, so that one bad batch
                # does not block its stream forever.
                trailer = ((REJECTED_SEQUENCE_KEY, str(self._rejected)),)
            await self._context.abort(code, details, trailer)

    async def _read(self) -> None:
        writer = self._ingest._writer
        heard = self._ingest.stats.heard
        async for raw in self._requests:
            try:
                msg = _decode(raw)
            except InvalidRequest as exc:
                self._ingest.stats.rejected += 1
                self._problem = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                return
            heard[self._agent_id] = wall_ns()
            kind = msg.WhichOneof("body")
            if kind == "batch":
                batch = msg.batch
                try:
                    validate_batch(batch, max_records=self._ingest._max_records, now_ns=wall_ns())
                    done = writer.submit(self._agent_id, batch)
                except InvalidBatch as exc:
                    self._ingest.stats.rejected += 1
                    log.warning("agent %s: refused %s", self._agent_id, exc)
                    self._problem = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    self._rejected = batch.sequence
                    return
                except Overloaded as exc:
                    self._ingest.stats.pushed_back += 1
                    self._problem = (grpc.StatusCode.RESOURCE_EXHAUSTED, f"push back: {exc}")
                    return
                except ShuttingDown as exc:
                    self._problem = (grpc.StatusCode.UNAVAILABLE, str(exc))
                    return
                self._inflight.add(done)
                done.add_done_callback(functools.partial(self._committed, batch.sequence))
            elif kind == "clock_sync":
                self._out.put_nowait(_ClockReply(msg.clock_sync, wall_ns()))
            elif kind == "hello":
                self._problem = (grpc.StatusCode.INVALID_ARGUMENT, "hello sent twice")
                return
            else:
                self._problem = (grpc.StatusCode.INVALID_ARGUMENT, "empty agent message")
                return

    def _committed(self, sequence: int, done: asyncio.Future[bool]) -> None:
        self._inflight.discard(done)
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            if self._problem is None:
                self._problem = (grpc.StatusCode.UNAVAILABLE, f"journal write failed: {exc}")
            self._failed.set()
            return
        ack = agent_pb2.Ack(sequence=sequence, duplicate=not done.result())
        self._out.put_nowait(agent_pb2.CollectorMessage(ack=ack))

    async def _send(self) -> None:
        while True:
            item = await self._out.get()
            if item is _END:
                return
            if isinstance(item, _ClockReply):
                req = item.request
                reply = events_pb2.ClockSyncReply(
                    id=req.id, t1_ns=req.t1_ns, t2_ns=item.t2, t3_ns=wall_ns()
                )
                item = agent_pb2.CollectorMessage(clock_sync=reply)
            await self._context.write(item)

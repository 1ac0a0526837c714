"""The control API rtctl drives runs with: clock sync, the run registry, progress, summaries.

rtctl registers a run, tells the collector when it sent the create request (in
its own clock, with its measured offset to the collector, so the "created" phase
lands in the collector timebase), follows the run live, and finishes it. On
finish the run summary is computed (``collector.summaries``, with the default
uncertainty bounds) and stored in the journal, from where the exporter ships it
to InfluxDB; GetRunSummary computes one afresh, with the bounds the request sets.

Writes go through the ingest's ``Writer`` (the journal's one thread, in order with
agent batches); reads open their own read-only connection in a worker thread, so
a large summary never holds up acknowledgements. FinishRun does both: the writer
marks the run finished, a reader computes the summary, the writer stores it.
Errors map to status codes in one place (``status_for``): unknown run NOT_FOUND,
existing run ALREADY_EXISTS, bad request INVALID_ARGUMENT, journal trouble
UNAVAILABLE. Requests are decoded here (``handler``), not by gRPC, so bytes that
are not the method's message get INVALID_ARGUMENT rather than gRPC's UNKNOWN.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from rtbench.clock import wall_ns
from rtbench.grpcdecoding import decoding_handler
from rtbench.v1 import agent_pb2, control_pb2, events_pb2

from .errors import (
    CollectorError,
    InvalidRequest,
    JournalError,
    Overloaded,
    RunExists,
    ShuttingDown,
    UnknownRun,
)
from .ingest import MAX_AHEAD_NS, MIN_TIME_NS, IngestStats, Writer
from .journal import TERMINAL_STATES, open_reader
from .progress import ProgressHub
from .screening import uncertainty_bounds
from .summaries import compute_summary

__all__ = ["ControlApi", "run_state_name", "status_for"]

log = logging.getLogger("collector.control")

T = TypeVar("T")

_STATUS: tuple[tuple[type[CollectorError], Any], ...] = (
    (UnknownRun, grpc.StatusCode.NOT_FOUND),
    (RunExists, grpc.StatusCode.ALREADY_EXISTS),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (JournalError, grpc.StatusCode.UNAVAILABLE),
)


def status_for(exc: CollectorError) -> Any:
    """The gRPC status code for one of our errors (INTERNAL for anything unforeseen)."""
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def run_state_name(state: int) -> str:
    """``RUN_STATE_FAILED`` for 4; a number no RunState has stays a number."""
    try:
        return str(control_pb2.RunState.Name(state))
    except ValueError:
        return str(state)


def _read(path: Path, fn: Callable[..., T], *args: Any) -> T:
    conn = open_reader(path)
    try:
        return fn(conn, *args)
    except sqlite3.Error as exc:
        raise JournalError(f"reading journal {path}: {exc}") from exc
    finally:
        conn.close()


def _run_row(conn: sqlite3.Connection, run_id: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT spec, state, created_ns, finished_ns, replicas FROM runs WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise UnknownRun(run_id)
    return tuple(row)


def _progress_snapshot(
    conn: sqlite3.Connection, run_id: str
) -> tuple[int, int, list[tuple[int, str]]]:
    _, state, _, _, replicas = _run_row(conn, run_id)
    pods = conn.execute(
        "SELECT DISTINCT phase, pod_uid FROM events WHERE run_id = ?", (run_id,)
    ).fetchall()
    return int(replicas or 0), int(state), [(int(p), str(u)) for p, u in pods]


def _summary(
    conn: sqlite3.Connection,
    run_id: str,
    include_pods: bool,
    bounds: dict[int, int] | None = None,
) -> control_pb2.RunSummary:
    return compute_summary(conn, run_id, include_pods=include_pods, bounds=bounds)  # UnknownRun


def _list_runs(conn: sqlite3.Connection, test_id: str, plan_id: str) -> list[control_pb2.RunInfo]:
    query = "SELECT spec, state, created_ns, finished_ns FROM runs"
    where, args = [], []
    if test_id:
        where.append("test_id = ?")
        args.append(test_id)
    if plan_id:
        where.append("plan_id = ?")
        args.append(plan_id)
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY registered_ns, run_id"
    return [
        control_pb2.RunInfo(
            spec=control_pb2.RunSpec.FromString(spec or b""),
            state=state,
            created_ns=created_ns or 0,
            finished_ns=finished_ns or 0,
        )
        for spec, state, created_ns, finished_ns in conn.execute(query, args)
    ]


def _list_agents(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in conn.execute(
            "SELECT agent_id, node, agent_version, node_facts, offset_ns, offset_uncertainty_ns,"
            " offset_measured_at_ns, offset_samples, last_seen_ns, committed_sequence"
            " FROM agents ORDER BY agent_id"
        )
    ]


class ControlApi:
    """The ControlService servicer (registered with ``add_ControlServiceServicer_to_server``)."""

    def __init__(self, writer: Writer, progress: ProgressHub, stats: IngestStats) -> None:
        self._writer = writer
        self._journal = writer.journal
        self._progress = progress
        self._stats = stats

    def handler(self) -> Any:
        """The generic RPC handler for ``rtbench.v1.ControlService`` (decoding requests itself)."""
        return decoding_handler(self, control_pb2.DESCRIPTOR.services_by_name["ControlService"])

    async def _reading(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(_read, self._journal.path, fn, *args)

    async def _fail(self, context: Any, exc: CollectorError) -> None:
        code = status_for(exc)
        if code == grpc.StatusCode.UNAVAILABLE:
            log.warning("control call failed: %s", exc)
        await context.abort(code, str(exc))

    async def SyncClock(  # the gRPC method name
        self, request: events_pb2.ClockSyncRequest, context: Any
    ) -> events_pb2.ClockSyncReply:
        t2 = wall_ns()
        return events_pb2.ClockSyncReply(
            id=request.id, t1_ns=request.t1_ns, t2_ns=t2, t3_ns=wall_ns()
        )

    async def RegisterRun(
        self, request: control_pb2.RegisterRunRequest, context: Any
    ) -> control_pb2.RegisterRunResponse:
        spec = request.spec
        try:
            if not spec.run_id:
                raise InvalidRequest("spec.run_id is empty")
            await self._writer.call(self._journal.register_run, spec, wall_ns())
        except CollectorError as exc:
            await self._fail(context, exc)
        log.info(
            "run %s registered (test %s, %s/%s, %d replicas)",
            spec.run_id,
            spec.test_id or "-",
            spec.runtime_class or "-",
            spec.variant or "-",
            spec.replicas,
        )
        return control_pb2.RegisterRunResponse(run_id=spec.run_id)

    async def RecordCreate(
        self, request: control_pb2.RecordCreateRequest, context: Any
    ) -> control_pb2.RecordCreateResponse:
        created_ns = request.request_sent_ns + request.rtctl_clock.offset_ns
        try:
            if request.request_sent_ns <= 0:
                raise InvalidRequest("request_sent_ns must be set")
            if 0 < request.response_received_ns < request.request_sent_ns:
                raise InvalidRequest("response_received_ns is before request_sent_ns")
            # Every latency of the run is measured from this time: one from a broken
            # clock would make the whole summary wrong, so it is refused, as ingest
            # refuses agent times outside the same window.
            if not MIN_TIME_NS <= created_ns <= wall_ns() + MAX_AHEAD_NS:
                raise InvalidRequest(
                    f"request_sent_ns {request.request_sent_ns} (offset "
                    f"{request.rtctl_clock.offset_ns}) is outside "
                    "[2001-01-01, collector now + 1 day]"
                )
            await self._writer.call(
                self._journal.record_create,
                request.run_id,
                created_ns,
                request.request_sent_ns,
                request.response_received_ns,
                request.rtctl_clock,
            )
        except CollectorError as exc:
            await self._fail(context, exc)
        self._progress.set_state(request.run_id, control_pb2.RUN_STATE_RUNNING)
        return control_pb2.RecordCreateResponse(created_ns=created_ns)

    async def FinishRun(
        self, request: control_pb2.FinishRunRequest, context: Any
    ) -> control_pb2.FinishRunResponse:
        run_id, now = request.run_id, wall_ns()
        try:
            if request.state not in TERMINAL_STATES:
                raise InvalidRequest(f"state {run_state_name(request.state)} does not finish a run")
            await self._writer.call(
                self._journal.finish_run, run_id, request.state, request.message, now
            )
        except CollectorError as exc:
            await self._fail(context, exc)
        self._progress.set_state(run_id, request.state)
        log.info("run %s finished: %s", run_id, control_pb2.RunState.Name(request.state))
        await self._store_summary(run_id, now)
        return control_pb2.FinishRunResponse()

    async def _store_summary(self, run_id: str, now: int) -> None:
        """Computes the finished run's summary off the journal thread (it may be
        large: the writer keeps committing and acking meanwhile), then stores it."""
        try:
            summary = await self._reading(_summary, run_id, False)
            await self._writer.call(self._journal.store_summary, run_id, summary, now)
        except Exception:
            # The run is finished either way; a summary can be recomputed on request.
            log.exception("summary of run %s could not be computed or stored", run_id)

    async def WatchProgress(self, request: control_pb2.WatchProgressRequest, context: Any) -> None:
        run_id = request.run_id
        with self._progress.watch(run_id) as watch:
            try:
                replicas, state, pods = await self._reading(_progress_snapshot, run_id)
            except CollectorError as exc:
                await self._fail(context, exc)
            self._progress.load(run_id, replicas, state, pods)
            async for message in self._progress.messages(watch):
                await context.write(message)

    async def GetRunSummary(
        self, request: control_pb2.GetRunSummaryRequest, context: Any
    ) -> control_pb2.RunSummary:
        try:
            bounds = uncertainty_bounds(request.max_uncertainty)  # InvalidRequest
            return await self._reading(_summary, request.run_id, request.include_pods, bounds)
        except CollectorError as exc:
            await self._fail(context, exc)
            raise  # not reached: abort raises

    async def ListRuns(
        self, request: control_pb2.ListRunsRequest, context: Any
    ) -> control_pb2.ListRunsResponse:
        try:
            runs = await self._reading(_list_runs, request.test_id, request.plan_id)
        except CollectorError as exc:
            await self._fail(context, exc)
        return control_pb2.ListRunsResponse(runs=runs)

    async def ListAgents(
        self, request: control_pb2.ListAgentsRequest, context: Any
    ) -> control_pb2.ListAgentsResponse:
        try:
            rows = await self._reading(_list_agents)
        except CollectorError as exc:
            await self._fail(context, exc)
        stats, now = self._stats, wall_ns()
        agents = []
        for agent_id, node, version, facts, off, unc, measured, samples, seen, committed in rows:
            info = control_pb2.AgentInfo(
                agent_id=agent_id,
                node=node,
                agent_version=version or "",
                node_facts=agent_pb2.NodeFacts.FromString(facts or b""),
                connected=agent_id in stats.connected,
                last_seen_ns=seen or 0,
                committed_sequence=committed,
                last_heard_ns=stats.heard.get(agent_id, 0),
                silence_bound_ns=stats.silence_bounds.get(agent_id, 0),
                stale=stats.stale(agent_id, now),
            )
            if off is not None:
                info.clock.CopyFrom(
                    events_pb2.ClockOffset(
                        offset_ns=off,
                        uncertainty_ns=unc or 0,
                        measured_at_ns=measured or 0,
                        samples=samples or 0,
                    )
                )
            agents.append(info)
        return control_pb2.ListAgentsResponse(agents=agents)

"""Helpers for the exporter and summary tests: journals with known content, a
scripted InfluxDB stand-in over real HTTP, and polling with a deadline.

Journals are filled through the real ``Journal`` API (``register_run``,
``record_create``, ``commit_batches``), so these tests exercise the ingest
engineer's half and ours together.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.exporting import Exporter
from collector.journal import Journal
from rtbench.influxd import LocalInfluxd
from rtbench.v1 import agent_pb2, control_pb2, events_pb2

MS = 1_000_000
T0 = 1_750_000_000_000_000_000
"""A fixed created time (2025-06-15), so expected values can be written down."""


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    within: float = 90.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Polls until the condition holds; generous deadlines for a loaded machine."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(exporter: Exporter) -> AsyncIterator[asyncio.Task[None]]:
    """Runs the exporter as a task and cancels it (and waits for it) afterwards."""
    task = asyncio.create_task(exporter.run(), name="exporter")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def open_journal(path: Path) -> Journal:
    return Journal.open(path)


def hello(journal: Journal, agent_id: str, node: str) -> None:
    journal.upsert_agent(agent_pb2.Hello(agent_id=agent_id, node=node, protocol="v1"), T0)


def register(
    journal: Journal,
    run_id: str,
    replicas: int,
    *,
    created_ns: int | None = T0,
    offset_ns: int = 0,
    uncertainty_ns: int = 0,
    registered_ns: int = T0 - 5 * MS,
) -> control_pb2.RunSpec:
    spec = control_pb2.RunSpec(
        run_id=run_id,
        test_id="test-a",
        runtime_class="kata-fc",
        variant="16Mi",
        replicas=replicas,
        image="rtbench/workload:1",
        memory_limit="16Mi",
        repetition=1,
        namespace="bench",
        environment={"cluster": "sim"},
    )
    journal.register_run(spec, registered_ns)
    if created_ns is not None:
        journal.record_create(
            run_id,
            created_ns,
            created_ns - offset_ns,
            created_ns - offset_ns + 2 * MS,
            events_pb2.ClockOffset(offset_ns=offset_ns, uncertainty_ns=uncertainty_ns),
        )
    return spec


def pod(uid: str, run_id: str = "", node: str = "", name: str = "") -> events_pb2.PodRef:
    return events_pb2.PodRef(
        uid=uid,
        namespace="bench",
        name=name or f"web-{uid}",
        node=node,
        run_id=run_id,
        labels={"app": "c-http-server"} if run_id else {},
    )


def event(
    ref: events_pb2.PodRef,
    phase: int,
    time_ns: int,
    *,
    source: int = events_pb2.SOURCE_WATCH,
    uncertainty_ns: int = 0,
    reason: str = "",
) -> events_pb2.Event:
    return events_pb2.Event(
        pod=ref,
        phase=phase,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        time_ns=time_ns,
        uncertainty_ns=uncertainty_ns,
        reason=reason,
    )


def node_sample(time_ns: int, available: int, total: int = 8 << 30) -> events_pb2.ResourceSample:
    return events_pb2.ResourceSample(
        time_ns=time_ns, mem_total_bytes=total, mem_available_bytes=available, cpu_busy=0.25
    )


def pod_sample(ref: events_pb2.PodRef, time_ns: int, used: int) -> events_pb2.ResourceSample:
    return events_pb2.ResourceSample(time_ns=time_ns, pod=ref, pod_memory_bytes=used)


def probe(ref: events_pb2.PodRef, time_ns: int, ok: bool) -> events_pb2.ProbeResult:
    return events_pb2.ProbeResult(
        pod=ref,
        time_ns=time_ns,
        ok=ok,
        latency_ns=300_000,
        status_code=200 if ok else 0,
        error="" if ok else "connection refused",
    )


def batch(
    sequence: int,
    events: Iterable[events_pb2.Event] = (),
    samples: Iterable[events_pb2.ResourceSample] = (),
    probes: Iterable[events_pb2.ProbeResult] = (),
    clock: events_pb2.ClockOffset | None = None,
) -> agent_pb2.Batch:
    b = agent_pb2.Batch(sequence=sequence, events=events, samples=samples, probes=probes)
    if clock is not None:
        b.clock.CopyFrom(clock)
    return b


STARTUP = (
    events_pb2.PHASE_SCHEDULED,
    events_pb2.PHASE_CONTAINER_STARTED,
    events_pb2.PHASE_RUNNING,
    events_pb2.PHASE_FIRST_RESPONSE,
    events_pb2.PHASE_READY,
)


@dataclass
class Sequences:
    """Next batch sequence per agent, so tests can keep appending."""

    next: dict[str, int] = field(default_factory=dict)

    def take(self, agent_id: str) -> int:
        value = self.next.get(agent_id, 1)
        self.next[agent_id] = value + 1
        return value


def run_batch(
    seqs: Sequences,
    agent_id: str,
    run_id: str,
    node: str,
    uids: Iterable[str],
    start_ns: int,
) -> tuple[str, agent_pb2.Batch]:
    """One agent's batch of a pod start: five phases per pod, a node sample, a
    pod memory sample and two probe attempts per pod."""
    events: list[events_pb2.Event] = []
    samples = [node_sample(start_ns, 4 << 30)]
    probes: list[events_pb2.ProbeResult] = []
    for i, uid in enumerate(uids):
        ref = pod(uid, run_id, node)
        base = start_ns + i * 7 * MS
        events.extend(event(ref, phase, base + k * MS) for k, phase in enumerate(STARTUP))
        samples.append(pod_sample(ref, base + 9 * MS, 3 << 20))
        probes += [probe(ref, base + 2 * MS, False), probe(ref, base + 3 * MS, True)]
    clock = events_pb2.ClockOffset(offset_ns=1_000, uncertainty_ns=50_000, samples=4)
    return agent_id, batch(seqs.take(agent_id), events, samples, probes, clock)


def journal_counts(journal: Journal) -> dict[str, int]:
    """What the exporter should have written per measurement, from the journal."""
    conn = journal.connection()

    def one(sql: str) -> int:
        return int(conn.execute(sql).fetchone()[0])

    phases = 0
    runs = 0
    for (blob,) in conn.execute("SELECT summary FROM summaries"):
        phases += len(control_pb2.RunSummary.FromString(blob).phases)
        runs += 1
    return {
        "pod_phase": one("SELECT count(*) FROM events WHERE run_id != ''"),
        "node_resources": one("SELECT count(*) FROM samples WHERE pod_uid IS NULL"),
        "pod_memory": one(
            "SELECT count(*) FROM samples WHERE pod_uid IS NOT NULL AND run_id != ''"
        ),
        "pod_probe": one("SELECT count(*) FROM probes WHERE run_id IS NOT NULL AND run_id != ''"),
        "run_summary": phases,
        "run": runs,
    }


COUNT_FIELDS = {
    "pod_phase": "uid",
    "node_resources": "mem_available_bytes",
    "pod_memory": "bytes",
    "pod_probe": "ok",
    "run_summary": "count",
    "run": "replicas",
}


def influx_counts(server: LocalInfluxd, db: str) -> dict[str, int]:
    """Points per measurement in InfluxDB, counted with InfluxQL."""
    counts = {}
    for measurement, field_name in COUNT_FIELDS.items():
        results = server.query(f'SELECT count("{field_name}") FROM "{measurement}"', db=db)
        series = results[0].get("series")
        counts[measurement] = int(series[0]["values"][0][1]) if series else 0
    return counts


@dataclass
class Seen:
    """One request the scripted server received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    lines: list[str]


Responder = Callable[[Seen], tuple[int, str]]


class ScriptedInflux:
    """A small HTTP server that answers /write and /api/v2/write as a script says.

    Real HTTP on loopback: it shows what the exporter sends and how it reacts to
    each status; it does not pretend to parse line protocol like InfluxDB.
    """

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or (lambda seen: (204, ""))
        self.requests: list[Seen] = []
        self.accepted: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        seen = Seen(
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            lines=[line for line in body.split("\n") if line],
        )
        self.requests.append(seen)
        status, text = self.respond(seen)
        if status == 204:
            self.accepted.extend(seen.lines)
            return web.Response(status=204)
        headers = {"X-Influxdb-Error": text} if text else {}
        return web.json_response({"error": text}, status=status, headers=headers)

    async def __aenter__(self) -> ScriptedInflux:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/write", self._handle)
        app.router.add_post("/api/v2/write", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

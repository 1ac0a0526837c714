"""Agents → ``collector serve`` → journal → InfluxDB, with real processes and a real InfluxDB.

Three agents stream concurrently (with resends) into a collector process that
exports to InfluxDB; every event must be in the journal once and in InfluxDB
once, counted with InfluxQL. Then the same with InfluxDB stopped for 20 s in the
middle: the agents keep being acknowledged (the journal is the source of truth)
and the export catches up once InfluxDB is back.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import grpc

from rtbench.clock import wall_ns
from rtbench.influxd import LocalInfluxd, free_port
from rtbench.v1 import agent_pb2, control_pb2, control_pb2_grpc, events_pb2
from tests.collector.agent_client import TestAgent, make_batch
from tests.collector.conftest import CollectorProcess, StartCollector, until

SIZE = 50
_dbs = itertools.count()


def influx_count(server: LocalInfluxd, db: str, measurement: str, field: str) -> int:
    results = server.query(f'SELECT count("{field}") FROM "{measurement}"', db=db)
    series = results[0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def journal_count(journal: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def batches_for(
    agent_id: str, run_id: str, first: int, last: int, t0: int
) -> list[agent_pb2.Batch]:
    """Batches with distinct times per sequence, one node sample each."""
    return [
        make_batch(s, SIZE, agent=agent_id, run_id=run_id, time_ns=t0 + s * 1_000_000, samples=1)
        for s in range(first, last + 1)
    ]


async def start_run(address: str, run_id: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        control = control_pb2_grpc.ControlServiceStub(channel)
        spec = control_pb2.RunSpec(
            run_id=run_id, test_id="e2e", runtime_class="runc", variant="16Mi", replicas=10
        )
        await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec))
        now = wall_ns()
        await control.RecordCreate(
            control_pb2.RecordCreateRequest(
                run_id=run_id,
                request_sent_ns=now - 3600 * 10**9,
                response_received_ns=now - 3600 * 10**9 + 10**6,
                rtctl_clock=events_pb2.ClockOffset(offset_ns=0, uncertainty_ns=1000),
            )
        )


async def finish_run(address: str, run_id: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        control = control_pb2_grpc.ControlServiceStub(channel)
        await control.FinishRun(
            control_pb2.FinishRunRequest(run_id=run_id, state=control_pb2.RUN_STATE_SUCCEEDED)
        )


async def stream(proc: CollectorProcess, agent_id: str, batches: list[agent_pb2.Batch]) -> None:
    """Sends the batches, then reconnects and resends the last third (as after a cut)."""
    node = f"node-{agent_id}"
    async with TestAgent(proc.listen, agent_id, node) as agent:
        await agent.send_all(batches, window=8)
    async with TestAgent(proc.listen, agent_id, node) as again:
        resend = batches[-len(batches) // 3 :]
        await again.send_all(resend, window=8)
        assert all(again.acks[b.sequence] for b in resend)


def collector_args(tmp_path: Path, server: LocalInfluxd, db: str) -> tuple[str, ...]:
    return (
        "--listen", f"127.0.0.1:{free_port()}",
        "--journal", str(tmp_path / "journal.sqlite"),
        "--influx-url", server.url,
        "--influx-db", db,
    )  # fmt: skip


async def test_three_agents_every_event_once_in_journal_and_influxdb(
    collector_process: StartCollector, influxd: LocalInfluxd, tmp_path: Path
) -> None:
    db = f"e2e_{next(_dbs)}"
    influxd.create_database(db)
    proc = collector_process(*collector_args(tmp_path, influxd, db))
    await start_run(proc.listen, "run-e2e")
    t0 = wall_ns() - 1800 * 10**9
    batches = 40
    await asyncio.gather(
        *(stream(proc, f"a{n}", batches_for(f"a{n}", "run-e2e", 1, batches, t0)) for n in range(3))
    )
    await finish_run(proc.listen, "run-e2e")
    events = 3 * batches * SIZE
    assert journal_count(proc.journal, "SELECT count(*) FROM events") == events
    assert journal_count(proc.journal, "SELECT count(DISTINCT attributes) FROM events") == events
    await until(
        lambda: influx_count(influxd, db, "pod_phase", "uid") >= events,
        what="events in InfluxDB",
    )
    await until(lambda: influx_count(influxd, db, "run", "replicas") == 1, what="run summary")
    assert influx_count(influxd, db, "pod_phase", "uid") == events
    assert influx_count(influxd, db, "node_resources", "mem_available_bytes") == 3 * batches
    assert proc.terminate() == 0


async def test_influxdb_down_for_20_seconds_export_catches_up(
    collector_process: StartCollector, own_influxd: LocalInfluxd, tmp_path: Path
) -> None:
    db = "outage"
    own_influxd.create_database(db)
    proc = collector_process(*collector_args(tmp_path, own_influxd, db))
    await start_run(proc.listen, "run-out")
    t0 = wall_ns() - 1800 * 10**9
    made = {f"o{n}": batches_for(f"o{n}", "run-out", 1, 60, t0) for n in range(3)}
    # First third while InfluxDB is up, and wait until it is there.
    await asyncio.gather(*(stream(proc, a, b[:20]) for a, b in made.items()))
    await until(
        lambda: influx_count(own_influxd, db, "pod_phase", "uid") == 3 * 20 * SIZE,
        what="first third exported",
    )
    own_influxd.stop()
    outage_started = asyncio.get_running_loop().time()
    # Agents are still acknowledged while InfluxDB is away.
    await asyncio.gather(*(stream(proc, a, b[20:40]) for a, b in made.items()))
    await asyncio.sleep(max(0.0, 20.0 - (asyncio.get_running_loop().time() - outage_started)))
    own_influxd.start()
    await asyncio.gather(*(stream(proc, a, b[40:]) for a, b in made.items()))
    events = 3 * 60 * SIZE
    assert journal_count(proc.journal, "SELECT count(*) FROM events") == events
    await until(
        lambda: influx_count(own_influxd, db, "pod_phase", "uid") >= events,
        within=180,
        what="export caught up",
    )
    assert influx_count(own_influxd, db, "pod_phase", "uid") == events
    assert proc.terminate() == 0
    assert "Traceback" not in proc.stderr()

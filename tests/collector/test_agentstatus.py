"""Agent health snapshots: rendered from a real journal, written to a real InfluxDB 1.6.

The dashboards' agent-health panels read ``agent_status`` and ``collector_status``;
these tests pin what those points say (offset, delivery lag, last seen, connected),
that a write with an ``Authorization: Token`` header (how the collector talks to
InfluxDB 2.x) still goes through on 1.x, and that an unreachable InfluxDB costs a
snapshot, never the reporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path

import pytest

from collector.agentstatus import CollectorGauges, StatusReporter, read_agents, status_lines
from collector.exporting import InfluxTarget
from collector.journal import Journal
from rtbench.clock import wall_ns
from rtbench.influxd import LocalInfluxd, free_port
from rtbench.v1 import agent_pb2, events_pb2
from tests.collector.export_fixtures import MS, batch, open_journal, until

_db_names = itertools.count()
IDLE = CollectorGauges(connected=frozenset(), export_backlog=0, pending_batches=0)


def fresh_db(server: LocalInfluxd) -> str:
    name = f"status_{next(_db_names)}"
    server.create_database(name)
    return name


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    """Two agents on node-a (the older one replaced) and one on node-b without a clock."""
    j = open_journal(tmp_path / "journal.sqlite")
    now = wall_ns()
    for agent_id, node, seen in (
        ("agent-old", "node-a", now - 60_000 * MS),
        ("agent-a", "node-a", now - 2_000 * MS),
        ("agent-b", "node-b", now - 1_000 * MS),
    ):
        j.upsert_agent(agent_pb2.Hello(agent_id=agent_id, node=node, protocol="v1"), seen)
    clock = events_pb2.ClockOffset(offset_ns=3 * MS, uncertainty_ns=250_000, samples=5)
    sealed = batch(1, clock=clock)
    # Sealed at agent time T; collector time T + 3 ms; received 40 ms after that,
    # which is also when agent-a was last seen.
    sealed.sealed_ns = now - 1_500 * MS
    j.commit_batches([("agent-a", sealed)], now - 1_500 * MS + 3 * MS + 40 * MS)
    j.commit_batches([("agent-b", batch(1))], now - 1_000 * MS)
    return j


def test_snapshot_lines_keep_the_newest_agent_per_node(journal: Journal) -> None:
    now = wall_ns()
    rows = read_agents(journal.path, 0)
    assert {r["agent_id"] for r in rows} == {"agent-old", "agent-a", "agent-b"}
    gauges = CollectorGauges(frozenset({"agent-a"}), export_backlog=7, pending_batches=2)
    lines = status_lines(rows, gauges, now)
    assert len(lines) == 3
    node_a, node_b, collector = lines
    assert node_a.startswith("agent_status,node=node-a ")
    assert 'agent_id="agent-a"' in node_a and "connected=true" in node_a
    assert "offset_ms=3.0" in node_a and "offset_uncertainty_ms=0.25" in node_a
    assert "delivery_lag_ms=40.0" in node_a and "committed_sequence=1i" in node_a
    # No clock estimate from agent-b: no offset fields, no lag, not connected.
    assert 'agent_id="agent-b"' in node_b and "connected=false" in node_b
    assert "offset_ms" not in node_b and "delivery_lag_ms" not in node_b
    assert collector == (
        f"collector_status agents_connected=1i,export_backlog=7i,pending_batches=2i {now}"
    )
    # Agents not seen since the cut-off are not read at all.
    assert [r["agent_id"] for r in read_agents(journal.path, now - 1_200 * MS)] == ["agent-b"]


async def test_snapshot_written_to_influxdb_with_a_token_header(
    journal: Journal, influxd: LocalInfluxd
) -> None:
    """InfluxDB 2.x wants 'Authorization: Token'; 1.x without auth must not mind it."""
    db = fresh_db(influxd)
    target = InfluxTarget(influxd.url, database=db, token="not-checked-by-1x")
    reporter = StatusReporter(journal.path, target, lambda: IDLE)
    writer = target.writer()
    try:
        assert await reporter.report(writer)
    finally:
        await writer.close()
    (series,) = influxd.query(
        "SELECT last(offset_ms), last(seen_ago_s), last(agent_id) FROM agent_status"
        " WHERE node = 'node-a'",
        db=db,
    )[0]["series"]
    _, offset, seen_ago, agent_id = series["values"][0]
    assert offset == 3.0 and agent_id == "agent-a" and 1.4 <= seen_ago < 600
    (series,) = influxd.query("SELECT count(pending_batches) FROM collector_status", db=db)[0][
        "series"
    ]
    assert series["values"][0][1] == 1


async def test_run_keeps_reporting_and_survives_an_unreachable_influxdb(
    journal: Journal, influxd: LocalInfluxd
) -> None:
    dead = InfluxTarget(f"http://127.0.0.1:{free_port()}", database="x", max_retry_s=0.5)
    unreachable = StatusReporter(journal.path, dead, lambda: IDLE, interval_s=0.05)
    writer = dead.writer()
    try:
        assert not await unreachable.report(writer)
    finally:
        await writer.close()

    db = fresh_db(influxd)
    reporter = StatusReporter(
        journal.path, InfluxTarget(influxd.url, database=db), lambda: IDLE, interval_s=0.05
    )
    task = asyncio.create_task(reporter.run(), name="agent-status")
    try:
        await until(lambda: reporter.snapshots >= 3, within=60, what="three snapshots")
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    counted = influxd.query("SELECT count(agent_id) FROM agent_status GROUP BY node", db=db)
    assert {s["tags"]["node"]: s["values"][0][1] >= 3 for s in counted[0]["series"]} == {
        "node-a": True,
        "node-b": True,
    }


def test_interval_must_be_positive(journal: Journal) -> None:
    target = InfluxTarget("http://127.0.0.1:1", database="x")
    with pytest.raises(ValueError):
        StatusReporter(journal.path, target, lambda: IDLE, interval_s=0)

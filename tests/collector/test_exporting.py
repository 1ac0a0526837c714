"""The exporter against a real InfluxDB 1.x and against a scripted server over real HTTP.

Real InfluxDB: every journal row becomes exactly one point (counted with
InfluxQL), a new exporter continues from the persisted cursors, a resend after
a lost cursor does not double-count, and a 20 s InfluxDB outage is caught up.
Scripted server: the status codes InfluxDB 1.6 cannot be made to produce on
demand (413, 429, 503, 401) and the v2 endpoint, which 1.6 does not serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from collector import exporting
from collector.errors import ConfigError
from collector.exporting import Exporter, InfluxTarget, InvalidTarget
from collector.journal import Journal
from collector.summaries import compute_summary
from rtbench.clock import wall_ns
from rtbench.influxd import LocalInfluxd
from rtbench.v1 import events_pb2
from tests.collector.export_fixtures import (
    MS,
    T0,
    ScriptedInflux,
    Seen,
    Sequences,
    batch,
    event,
    hello,
    influx_counts,
    journal_counts,
    node_sample,
    open_journal,
    pod,
    pod_sample,
    probe,
    register,
    run_batch,
    running,
    until,
)

_db_names = itertools.count()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = open_journal(tmp_path / "journal.sqlite")
    hello(j, "agent-a", "node-a")
    hello(j, "agent-b", "node-b")
    return j


def fresh_db(server: LocalInfluxd) -> str:
    name = f"export_{next(_db_names)}"
    server.create_database(name)
    return name


def fill(journal: Journal, seqs: Sequences, run_id: str, first_pod: int, pods: int) -> None:
    """Pods of a run split over two agents, plus rows that are outside any run."""
    uids = [f"{run_id}-{i}" for i in range(first_pod, first_pod + pods)]
    start = T0 + first_pod * 10 * MS
    stray = pod(f"stray-{first_pod}", node="node-a")
    extra = batch(
        seqs.take("agent-a"),
        events=[event(stray, events_pb2.PHASE_SCHEDULED, start + 1)],
        samples=[pod_sample(stray, start + 2, 1 << 20)],
        probes=[probe(stray, start + 3, True)],
    )
    journal.commit_batches(
        [
            run_batch(seqs, "agent-a", run_id, "node-a", uids[::2], start),
            run_batch(seqs, "agent-b", run_id, "node-b", uids[1::2], start),
            ("agent-a", extra),
        ],
        T0,
    )


def cursors(journal: Journal) -> dict[str, int]:
    rows = journal.connection().execute("SELECT stream, last_id FROM export_cursors")
    return {stream: last for stream, last in rows}


def max_ids(journal: Journal) -> dict[str, int]:
    """The last row id per stream that has rows: where the cursors must end up."""
    conn = journal.connection()
    ids = {
        s: int(conn.execute(f"SELECT coalesce(max(id), 0) FROM {s}").fetchone()[0])
        for s in exporting.STREAMS
    }
    return {stream: last for stream, last in ids.items() if last}


def target(url: str, **kw: object) -> InfluxTarget:
    options: dict[str, object] = {"database": "db", "max_retry_s": 0.5, **kw}
    return InfluxTarget(url, **options)  # type: ignore[arg-type]


def test_target_is_checked_without_io() -> None:
    for bad in (
        {"url": "localhost:8086", "database": "d"},
        {"url": "http://x", "database": ""},
        {"url": "http://x", "api": "v3", "database": "d"},
        {"url": "http://x", "api": "v2", "org": "o", "bucket": "b"},
        {"url": "http://x", "database": "d", "batch_lines": 0},
    ):
        with pytest.raises(InvalidTarget) as info:
            InfluxTarget(**bad)
        assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)
    InfluxTarget("http://x", api="v2", org="o", bucket="b", token="t")


async def test_every_row_once_then_continue_from_cursor(
    journal: Journal, influxd: LocalInfluxd
) -> None:
    seqs = Sequences()
    register(journal, "run-1", replicas=30)
    fill(journal, seqs, "run-1", 0, 30)
    journal.finish_run("run-1", 3, "", T0 + 10**9)
    summary = compute_summary(journal.connection(), "run-1", include_pods=False)
    journal.store_summary("run-1", summary, T0 + 10**9)
    db = fresh_db(influxd)
    first = Exporter(journal.path, InfluxTarget(influxd.url, database=db, batch_lines=64))
    expected = journal_counts(journal)
    assert first.backlog() == sum(max_ids(journal).values())
    async with running(first):
        await until(lambda: influx_counts(influxd, db) == expected, what="first export")
        await until(lambda: first.backlog() == 0, what="backlog drained")
    assert cursors(journal) == max_ids(journal)
    assert first.stats.batches > 1 and first.stats.dead_lettered == 0
    assert first.stats.skipped == 3  # the stray pod's event, sample and probe
    assert first.stats.points_written == sum(expected.values())

    # Latency of one known event: pod 0 (agent-a, first of its batch) scheduled
    # at T0 + 0 ms agent time + 1 µs clock offset.
    (row,) = influxd.query(
        "SELECT latency_ms, clock_uncertainty_ms, uid FROM pod_phase"
        " WHERE phase = 'scheduled' AND pod = '0' AND run_id = 'run-1'",
        db=db,
    )[0]["series"][0]["values"]
    assert row[1:] == [0.001, 0.05, "run-1-0"]

    fill(journal, seqs, "run-1", 30, 10)
    expected = journal_counts(journal)
    second = Exporter(journal.path, InfluxTarget(influxd.url, database=db))
    async with running(second):
        await until(lambda: influx_counts(influxd, db) == expected, what="second export")
        await until(lambda: second.backlog() == 0, what="backlog drained")
    # Only the new rows went out: 10 pods x (5 events + 1 pod sample + 2 probes)
    # + 2 node samples; the stray pod's rows are skipped.
    assert second.stats.points_written == 10 * 8 + 2
    assert second.stats.skipped == 3
    assert cursors(journal) == max_ids(journal)


async def test_resend_after_lost_cursors_does_not_double_count(
    journal: Journal, influxd: LocalInfluxd
) -> None:
    seqs = Sequences()
    register(journal, "run-2", replicas=12)
    fill(journal, seqs, "run-2", 0, 12)
    db = fresh_db(influxd)
    expected = journal_counts(journal)
    async with running(Exporter(journal.path, InfluxTarget(influxd.url, database=db))):
        await until(lambda: influx_counts(influxd, db) == expected, what="export")
    # As if the collector died after the write but before the cursor commit.
    journal.connection().execute("DELETE FROM export_cursors")
    again = Exporter(journal.path, InfluxTarget(influxd.url, database=db))
    async with running(again):
        await until(lambda: again.backlog() == 0, what="resend")
    assert again.stats.points_written == sum(expected.values())
    assert influx_counts(influxd, db) == expected


async def test_influxdb_down_for_20_seconds_export_catches_up(
    journal: Journal, own_influxd: LocalInfluxd
) -> None:
    seqs = Sequences()
    register(journal, "run-3", replicas=400)
    db = fresh_db(own_influxd)
    exporter = Exporter(journal.path, InfluxTarget(own_influxd.url, database=db, max_retry_s=2))
    added = 0

    async def produce() -> None:
        nonlocal added
        while True:
            fill(journal, seqs, "run-3", added, 2)
            added += 2
            await asyncio.sleep(0.1)

    async with running(exporter):
        producer = asyncio.create_task(produce(), name="producer")
        try:
            await until(lambda: exporter.stats.points_written > 50, what="first points")
            await asyncio.to_thread(own_influxd.stop)
            retries_before = exporter.stats.retries
            await asyncio.sleep(20)
            assert exporter.stats.retries > retries_before
            assert exporter.backlog() > 0
            await asyncio.to_thread(own_influxd.start)
            await asyncio.sleep(1)
        finally:
            producer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await producer
        expected = journal_counts(journal)
        await until(lambda: influx_counts(own_influxd, db) == expected, within=120, what="catch-up")
        await until(lambda: exporter.backlog() == 0, what="backlog drained")
    assert exporter.stats.dead_lettered == 0
    assert cursors(journal) == max_ids(journal)


def only_events(journal: Journal, count: int, run_id: str = "run-s") -> None:
    register(journal, run_id, replicas=count)
    refs = [pod(f"p{i}", run_id, "node-a") for i in range(count)]
    events = [event(r, events_pb2.PHASE_READY, T0 + i * MS) for i, r in enumerate(refs)]
    journal.commit_batches([("agent-a", batch(1, events))], T0)


async def test_413_splits_the_batch(journal: Journal) -> None:
    only_events(journal, 10)

    def respond(seen: Seen) -> tuple[int, str]:
        return (413, "request entity too large") if len(seen.lines) > 3 else (204, "")

    async with ScriptedInflux(respond) as server:
        exporter = Exporter(journal.path, target(server.url))
        async with running(exporter):
            await until(lambda: exporter.backlog() == 0, what="split export")
    assert sorted(server.accepted) == sorted(set(server.accepted))
    assert len(server.accepted) == 10
    assert [len(r.lines) for r in server.requests][:3] == [10, 5, 2]
    assert exporter.stats.splits >= 3 and exporter.stats.dead_lettered == 0
    first = server.requests[0]
    assert first.path == "/write" and first.query == {"db": "db", "precision": "ns"}


async def test_400_dead_letters_the_bad_line_only(journal: Journal) -> None:
    only_events(journal, 9)

    def respond(seen: Seen) -> tuple[int, str]:
        bad = [line for line in seen.lines if 'uid="p4"' in line]
        return (400, f"partial write: unable to parse '{bad[0]}'") if bad else (204, "")

    async with ScriptedInflux(respond) as server:
        exporter = Exporter(journal.path, target(server.url))
        async with running(exporter):
            await until(lambda: exporter.backlog() == 0, what="export")
    assert len(server.accepted) == 8
    ((stream, first_id, last_id, status, error, lines),) = journal.connection().execute(
        "SELECT stream, first_id, last_id, status, error, lines FROM export_dead_letters"
    )
    (bad_id,) = (
        journal.connection().execute("SELECT id FROM events WHERE pod_uid = 'p4'").fetchone()
    )
    assert (stream, first_id, last_id, status) == ("events", bad_id, bad_id, 400)
    assert "unable to parse" in error and 'uid="p4"' in lines and "\n" not in lines
    assert exporter.stats.dead_lettered == 1 and exporter.stats.points_written == 8


@pytest.mark.parametrize("statuses", [[503, 429], [401, 403, 404]])
async def test_retryable_answers_are_retried_not_dead_lettered(
    journal: Journal, statuses: list[int]
) -> None:
    only_events(journal, 4)
    script = list(statuses)

    def respond(seen: Seen) -> tuple[int, str]:
        return (script.pop(0), "not now") if script else (204, "")

    async with ScriptedInflux(respond) as server:
        exporter = Exporter(
            journal.path, target(server.url, username="u", password="secret", token="tok")
        )
        async with running(exporter):
            await until(lambda: exporter.backlog() == 0, what="export after retries")
    assert len(server.requests) == len(statuses) + 1
    assert len(server.accepted) == 4
    assert exporter.stats.retries == len(statuses) and exporter.stats.dead_lettered == 0
    assert "not now" in exporter.stats.last_error
    assert journal.connection().execute("SELECT count(*) FROM export_dead_letters").fetchone() == (
        0,
    )
    last = server.requests[-1]
    assert last.query == {"db": "db", "precision": "ns", "u": "u", "p": "secret"}
    assert last.headers["Authorization"] == "Token tok"


async def test_v2_write_with_org_bucket_token(journal: Journal) -> None:
    only_events(journal, 8)
    script = [503]

    def respond(seen: Seen) -> tuple[int, str]:
        if script:
            return script.pop(0), "unavailable"
        if len(seen.lines) > 4:
            return 413, "too large"
        if any('uid="p6"' in line for line in seen.lines):
            return 400, "unable to parse"
        return 204, ""

    async with ScriptedInflux(respond) as server:
        exporter = Exporter(
            journal.path,
            InfluxTarget(
                server.url, api="v2", org="lab", bucket="rt", token="s3cret", max_retry_s=0.5
            ),
        )
        async with running(exporter):
            await until(lambda: exporter.backlog() == 0, what="v2 export")
    first = server.requests[0]
    assert first.path == "/api/v2/write"
    assert first.query == {"org": "lab", "bucket": "rt", "precision": "ns"}
    assert first.headers["Authorization"] == "Token s3cret"
    assert len(server.accepted) == 7 and exporter.stats.dead_lettered == 1
    assert exporter.stats.retries == 1 and exporter.stats.splits >= 1
    dead = journal.connection().execute("SELECT status, error, lines FROM export_dead_letters")
    ((status, error, lines),) = dead.fetchall()
    assert status == 400 and "unable to parse" in error and 'uid="p6"' in lines


async def test_events_wait_briefly_for_the_create_time(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporting, "CREATE_GRACE_S", 3.0)
    register(journal, "early", replicas=1, created_ns=None, registered_ns=wall_ns())
    ref = pod("e0", "early", "node-a")
    journal.commit_batches(
        [("agent-a", batch(1, [event(ref, events_pb2.PHASE_SCHEDULED, T0)]))], T0
    )
    async with ScriptedInflux() as server:
        exporter = Exporter(journal.path, target(server.url, flush_interval_s=0.05))
        async with running(exporter):
            await asyncio.sleep(0.5)
            assert server.accepted == []
            journal.record_create("early", T0 - 4 * MS, T0 - 4 * MS, T0, events_pb2.ClockOffset())
            await until(lambda: len(server.accepted) == 1, what="released event")
            assert "latency_ms=4.0" in server.accepted[0]

            # A run whose create never comes is not held forever.
            register(journal, "never", replicas=1, created_ns=None, registered_ns=wall_ns())
            late = pod("n0", "never", "node-a")
            journal.commit_batches(
                [("agent-a", batch(2, [event(late, events_pb2.PHASE_SCHEDULED, T0)]))], T0
            )
            await until(lambda: len(server.accepted) == 2, what="event after the grace")
    assert "latency_ms" not in server.accepted[1]


async def test_missing_journal_is_a_journal_error(tmp_path: Path) -> None:
    from collector.errors import JournalError

    exporter = Exporter(tmp_path / "absent.sqlite", target("http://127.0.0.1:9"))
    assert exporter.backlog() == 0
    with pytest.raises(JournalError):
        await exporter.run()
    assert not (tmp_path / "absent.sqlite").exists()


def test_backlog_counts_rows_after_the_cursor(journal: Journal) -> None:
    journal.commit_batches(
        [("agent-a", batch(1, samples=[node_sample(T0, 1 << 30), node_sample(T0 + 1, 1 << 29)]))],
        T0,
    )
    # The exporter's cursor upsert must fit the journal's table.
    conn = sqlite3.connect(journal.path)
    conn.execute(
        "INSERT INTO export_cursors(stream, last_id) VALUES ('samples', 1)"
        " ON CONFLICT(stream) DO UPDATE SET last_id = excluded.last_id"
    )
    conn.commit()
    conn.close()
    assert Exporter(journal.path, target("http://127.0.0.1:9")).backlog() == 1


def container_event(
    ref: events_pb2.PodRef, phase: int, time_ns: int, container: str = "", reason: str = ""
) -> events_pb2.Event:
    ev = event(ref, phase, time_ns, reason=reason)
    ev.container = container
    return ev


def series(server: LocalInfluxd, db: str, query: str) -> list[dict[str, Any]]:
    return list(server.query(query, db=db)[0].get("series", []))


async def test_events_of_one_pod_update_are_separate_points(
    journal: Journal, influxd: LocalInfluxd
) -> None:
    """The agent stamps every event of one watch line with the line's arrival ns."""
    P = events_pb2
    register(journal, "run-u", replicas=1)
    ref = pod("u0", "run-u", "node-a")
    stamp = T0 + 7 * MS
    events = [
        # Two containers of the pod start in the same update.
        container_event(ref, P.PHASE_CONTAINER_STARTED, stamp, "app"),
        container_event(ref, P.PHASE_CONTAINER_STARTED, stamp, "sidecar"),
        # A pod-level failure and a container's, from the same update.
        container_event(ref, P.PHASE_FAILED, stamp, reason="Evicted"),
        container_event(ref, P.PHASE_FAILED, stamp, "app", reason="OOMKilled"),
        # One container failing for two reasons at once.
        container_event(ref, P.PHASE_FAILED, stamp, "sidecar", reason="Error"),
        container_event(ref, P.PHASE_FAILED, stamp, "sidecar", reason="CrashLoopBackOff"),
    ]
    # Pods outside any run, listed at once (one ns): not exported at all.
    strays = [event(pod(f"stray-{i}", node="node-a"), P.PHASE_SCHEDULED, stamp) for i in range(2)]
    journal.commit_batches([("agent-a", batch(1, [*events, *strays]))], T0)
    db = fresh_db(influxd)
    exporter = Exporter(journal.path, InfluxTarget(influxd.url, database=db))
    async with running(exporter):
        await until(lambda: exporter.backlog() == 0, what="export")
    started = series(
        influxd,
        db,
        "SELECT count(uid) FROM pod_phase WHERE phase = 'container_started' GROUP BY container",
    )
    assert {s["tags"]["container"]: s["values"][0][1] for s in started} == {"app": 1, "sidecar": 1}
    failed = series(
        influxd,
        db,
        "SELECT count(uid) FROM pod_phase WHERE phase = 'failed'"
        " GROUP BY container, failure_reason",
    )
    assert sorted((s["tags"]["container"], s["tags"]["failure_reason"]) for s in failed) == [
        ("", "Evicted"),
        ("app", "OOMKilled"),
        ("sidecar", "CrashLoopBackOff"),
        ("sidecar", "Error"),
    ]
    assert all(s["values"][0][1] == 1 for s in failed)
    assert influx_counts(influxd, db)["pod_phase"] == len(events)
    assert exporter.stats.points_written == len(events)
    assert exporter.stats.skipped == len(strays)


async def test_run_point_counts_each_failed_pod_once(
    journal: Journal, influxd: LocalInfluxd
) -> None:
    P = events_pb2
    register(journal, "run-f", replicas=3)
    twice, once = pod("f0", "run-f", "node-a"), pod("f1", "run-f", "node-a")
    events = [
        event(twice, P.PHASE_FAILED, T0 + 5 * MS, reason="Error"),
        event(twice, P.PHASE_FAILED, T0 + 9 * MS, reason="CrashLoopBackOff"),
        event(once, P.PHASE_FAILED, T0 + 6 * MS, reason="Error"),
        event(pod("f2", "run-f", "node-a"), P.PHASE_READY, T0 + 4 * MS),
    ]
    journal.commit_batches([("agent-a", batch(1, events))], T0)
    journal.finish_run("run-f", 4, "", T0 + 10**9)
    summary = compute_summary(journal.connection(), "run-f", include_pods=False)
    assert summary.failed_pods == 2
    # Per pod, the set of its reasons: each failed pod is in exactly one entry.
    assert [(f.reason, f.count) for f in summary.failures] == [
        ("CrashLoopBackOff+Error", 1),
        ("Error", 1),
    ]
    journal.store_summary("run-f", summary, T0 + 10**9)
    db = fresh_db(influxd)
    exporter = Exporter(journal.path, InfluxTarget(influxd.url, database=db))
    async with running(exporter):
        await until(lambda: exporter.backlog() == 0, what="export")
    ((run,),) = [s["values"] for s in series(influxd, db, "SELECT failed_pods, state FROM run")]
    assert run[1:] == [2, "failed"]
    reasons = series(influxd, db, "SELECT sum(pods) FROM run_failures GROUP BY reason")
    assert {s["tags"]["reason"]: s["values"][0][1] for s in reasons} == {
        "CrashLoopBackOff+Error": 1,
        "Error": 1,
    }


def journal_fds(path: Path) -> int:
    """Open file descriptors of this process on the journal file itself."""
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found += os.readlink(f"/proc/self/fd/{fd}") == str(path)
    return found


async def test_backlog_opens_nothing_once_the_exporter_stopped(journal: Journal) -> None:
    only_events(journal, 3)
    async with ScriptedInflux() as server:
        exporter = Exporter(journal.path, target(server.url))
        async with running(exporter):
            await until(lambda: exporter.backlog() == 0, what="export")
    # Past the cache, as the collector's backlog poller may still call it.
    await asyncio.sleep(exporting.BACKLOG_CACHE_S * 2)
    assert exporter.backlog() == 0
    # SQLite closes a connection's descriptor only once no other connection of
    # the process holds the file: with the writer closed, none may be left.
    journal.close()
    assert journal_fds(journal.path) == 0

"""The journal on a real SQLite file: schema, idempotency, offsets, pod ordinals, reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from collector.errors import InvalidRequest, JournalError, RunExists, UnknownRun
from collector.journal import Journal, open_reader
from rtbench.v1 import agent_pb2, control_pb2, events_pb2
from tests.collector.agent_client import make_batch

T0 = 1_750_000_000_000_000_000


def hello(agent_id: str = "a1", node: str = "node-1") -> agent_pb2.Hello:
    return agent_pb2.Hello(agent_id=agent_id, node=node, agent_version="1.0", protocol="v1")


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal.open(tmp_path / "sub" / "journal.sqlite")
    j.upsert_agent(hello(), T0)
    return j


def count(j: Journal, table: str) -> int:
    return int(j.connection().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_schema_wal_and_durability(journal: Journal) -> None:
    conn = journal.connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "meta",
        "agents",
        "batches",
        "runs",
        "pods",
        "events",
        "samples",
        "probes",
        "summaries",
        "export_cursors",
        "export_dead_letters",
    } <= tables
    columns = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    assert columns[:12] == [
        "id",
        "agent_id",
        "sequence",
        "run_id",
        "pod_uid",
        "namespace",
        "name",
        "node",
        "phase",
        "source",
        "time_ns",
        "corrected_ns",
    ]
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == "1"
    assert meta["collector_id"] == journal.collector_id


def test_resent_batch_is_stored_once(journal: Journal) -> None:
    b1, b2 = make_batch(1, 5, time_ns=T0), make_batch(2, 3, time_ns=T0)
    assert journal.commit_batches([("a1", b1), ("a1", b2)], T0) == [True, True]
    # A resend, in a group with a new batch and a duplicate within the group.
    b3 = make_batch(3, 2, time_ns=T0)
    assert journal.commit_batches([("a1", b2), ("a1", b3), ("a1", b3)], T0) == [
        False,
        True,
        False,
    ]
    assert count(journal, "events") == 10
    assert count(journal, "batches") == 3
    # The same sequence from another agent is a different batch.
    journal.upsert_agent(hello("a2", "node-2"), T0)
    assert journal.commit_batches([("a2", b1)], T0) == [True]
    assert count(journal, "events") == 15


def test_offsets_are_applied_and_kept_beside_raw_times(journal: Journal) -> None:
    with_clock = make_batch(1, 1, time_ns=T0, offset_ns=-2500, uncertainty_ns=700)
    without = make_batch(2, 1, time_ns=T0, offset_ns=None)
    journal.commit_batches([("a1", with_clock), ("a1", without)], T0 + 1)
    rows = journal.connection().execute(
        "SELECT sequence, time_ns, corrected_ns, clock_uncertainty_ns, uncertainty_ns"
        " FROM events ORDER BY sequence"
    )
    assert list(rows) == [(1, T0, T0 - 2500, 700, 10), (2, T0, T0, -1, 10)]
    batches = journal.connection().execute(
        "SELECT sequence, offset_ns, offset_uncertainty_ns, received_ns FROM batches"
    )
    assert sorted(batches) == [(1, -2500, 700, T0 + 1), (2, 0, -1, T0 + 1)]
    agent = journal.connection().execute(
        "SELECT offset_ns, offset_uncertainty_ns, offset_samples FROM agents WHERE agent_id='a1'"
    )
    assert agent.fetchone() == (-2500, 700, 4)


def agent_offset(j: Journal, agent_id: str = "a1") -> tuple[int, int, int]:
    row = j.connection().execute(
        "SELECT offset_ns, offset_uncertainty_ns, offset_samples FROM agents WHERE agent_id = ?",
        (agent_id,),
    )
    return tuple(row.fetchone())


def test_an_older_batch_never_rolls_the_agent_offset_back(journal: Journal) -> None:
    def clocked(sequence: int, offset: int) -> agent_pb2.Batch:
        return make_batch(sequence, 1, time_ns=T0, offset_ns=offset, uncertainty_ns=offset // 10)

    # In one group, newest first (a resend after a gap lands behind a new batch).
    journal.commit_batches([("a1", clocked(3, 3000)), ("a1", clocked(2, 2000))], T0)
    assert agent_offset(journal) == (3000, 300, 4)
    # In a later group: batch 1 finally arrives; a batch without a clock changes nothing.
    journal.commit_batches([("a1", clocked(1, 1000))], T0)
    journal.commit_batches([("a1", make_batch(5, 1, time_ns=T0, offset_ns=None))], T0)
    assert agent_offset(journal) == (3000, 300, 4)
    # Batch 4 is older than 5 but 5 had no clock: 4 is the newest estimate.
    journal.commit_batches([("a1", clocked(4, 4000))], T0)
    assert agent_offset(journal) == (4000, 400, 4)
    assert journal.commit_batches([("a1", clocked(2, 9999))], T0) == [False]
    assert agent_offset(journal) == (4000, 400, 4)
    # Each batch keeps the estimate that corrected it.
    rows = journal.connection().execute(
        "SELECT sequence, offset_ns, offset_measured_at_ns, offset_samples FROM batches"
        " ORDER BY sequence"
    )
    assert list(rows) == [
        *((seq, seq * 1000, T0, 4) for seq in range(1, 5)),
        (5, 0, None, None),
    ]


def test_columns_added_since_version_1_are_added_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE batches(agent_id TEXT NOT NULL, sequence INTEGER NOT NULL,"
        " received_ns INTEGER NOT NULL, sealed_ns INTEGER, events INTEGER, samples INTEGER,"
        " probes INTEGER, offset_ns INTEGER, offset_uncertainty_ns INTEGER,"
        " PRIMARY KEY(agent_id, sequence)) WITHOUT ROWID"
    )
    old.execute("INSERT INTO batches VALUES ('a1', 1, 5, NULL, 1, 0, 0, 40, 7)")
    old.commit()
    old.close()
    j = Journal.open(path)
    try:
        j.upsert_agent(hello(), T0)
        assert j.commit_batches([("a1", make_batch(2, 1, time_ns=T0))], T0) == [True]
        rows = j.connection().execute(
            "SELECT sequence, offset_uncertainty_ns, offset_measured_at_ns, offset_samples"
            " FROM batches ORDER BY sequence"
        )
        assert list(rows) == [(1, 7, None, None), (2, 1000, T0, 4)]
    finally:
        j.close()


def test_node_rule_and_node_samples(journal: Journal) -> None:
    batch = make_batch(1, 2, time_ns=T0, samples=1)
    batch.events[0].pod.node = "node-9"
    journal.commit_batches([("a1", batch)], T0)
    nodes = [r[0] for r in journal.connection().execute("SELECT node FROM events ORDER BY id")]
    assert nodes == ["node-9", "node-1"]  # pod.node, else the agent's node
    sample = journal.connection().execute("SELECT node, pod_uid, run_id FROM samples").fetchone()
    assert sample == ("node-1", None, None)


def test_pod_ordinals_in_order_of_first_sight(journal: Journal) -> None:
    def pod_event(batch: agent_pb2.Batch, run_id: str, uid: str) -> None:
        ev = batch.events.add()
        ev.pod.uid, ev.pod.run_id, ev.pod.name = uid, run_id, uid
        ev.pod.labels["app"] = "c-http-server"
        ev.phase = events_pb2.PHASE_SCHEDULED
        ev.time_ns = T0

    b1 = agent_pb2.Batch(sequence=1)
    for uid in ("x", "y", "x"):
        pod_event(b1, "run-a", uid)
    pod_event(b1, "run-b", "z")
    pod_event(b1, "", "outside")
    b2 = agent_pb2.Batch(sequence=2)
    probe = b2.probes.add()
    probe.pod.uid, probe.pod.run_id, probe.time_ns, probe.ok = "w", "run-a", T0, True
    journal.commit_batches([("a1", b1), ("a1", b2)], T0)
    pods = journal.connection().execute(
        "SELECT run_id, uid, ordinal, labels FROM pods ORDER BY run_id, ordinal"
    )
    assert list(pods) == [
        ("run-a", "x", 0, '{"app":"c-http-server"}'),
        ("run-a", "y", 1, '{"app":"c-http-server"}'),
        ("run-a", "w", 2, None),
        ("run-b", "z", 0, '{"app":"c-http-server"}'),
    ]
    # Reopened: ordinals continue where the file says, not from the cache.
    journal.close()
    again = Journal.open(journal.path)
    b3 = agent_pb2.Batch(sequence=3)
    pod_event(b3, "run-a", "v")
    pod_event(b3, "run-a", "x")
    again.commit_batches([("a1", b3)], T0)
    ordinals = again.connection().execute("SELECT uid, ordinal FROM pods WHERE run_id='run-a'")
    assert dict(ordinals) == {"x": 0, "y": 1, "w": 2, "v": 3}


def test_committed_sequence_is_the_contiguous_prefix(journal: Journal) -> None:
    def committed() -> int:
        return journal.upsert_agent(hello(), T0)

    journal.commit_batches([("a1", make_batch(2, 1)), ("a1", make_batch(4, 1))], T0)
    assert committed() == 0
    journal.commit_batches([("a1", make_batch(1, 1))], T0)
    assert committed() == 2
    journal.commit_batches([("a1", make_batch(3, 1))], T0)
    assert committed() == 4
    journal.close()
    again = Journal.open(journal.path)
    assert again.collector_id == journal.collector_id
    assert again.upsert_agent(hello(), T0) == 4
    again.commit_batches([("a1", make_batch(5, 1))], T0)
    assert again.upsert_agent(hello(), T0) == 5


def test_batch_from_an_unknown_agent_is_kept(journal: Journal) -> None:
    assert journal.commit_batches([("stranger", make_batch(1, 2))], T0) == [True]
    row = journal.connection().execute(
        "SELECT node, committed_sequence FROM agents WHERE agent_id='stranger'"
    )
    assert row.fetchone() == ("", 1)


def test_failed_transaction_stores_nothing_and_the_journal_goes_on(journal: Journal) -> None:
    good = make_batch(1, 3, run_id="run-f")
    bad = make_batch(2**63, 1)  # does not fit an SQLite integer
    with pytest.raises(JournalError):
        journal.commit_batches([("a1", good), ("a1", bad)], T0)
    assert count(journal, "events") == 0
    assert count(journal, "pods") == 0
    assert journal.commit_batches([("a1", good)], T0) == [True]
    assert count(journal, "events") == 3
    ordinals = journal.connection().execute("SELECT ordinal FROM pods ORDER BY ordinal")
    assert [o for (o,) in ordinals] == [0, 1, 2]


def test_runs_lifecycle(journal: Journal) -> None:
    spec = control_pb2.RunSpec(
        run_id="r1", test_id="t", runtime_class="runc", replicas=3, environment={"k": "v"}
    )
    journal.register_run(spec, T0)
    with pytest.raises(RunExists):
        journal.register_run(spec, T0)
    with pytest.raises(InvalidRequest):
        journal.register_run(control_pb2.RunSpec(), T0)
    clock = events_pb2.ClockOffset(offset_ns=40, uncertainty_ns=5)
    journal.record_create("r1", T0 + 40, T0, T0 + 1000, clock)
    with pytest.raises(UnknownRun):
        journal.record_create("nope", T0, T0, T0, clock)
    row = journal.connection().execute(
        "SELECT state, created_ns, created_raw_ns, create_response_raw_ns, rtctl_offset_ns,"
        " rtctl_uncertainty_ns, environment, spec FROM runs"
    )
    state, created, raw, response, offset, unc, env, blob = row.fetchone()
    assert (state, created, raw, response, offset, unc) == (
        control_pb2.RUN_STATE_RUNNING,
        T0 + 40,
        T0,
        T0 + 1000,
        40,
        5,
    )
    assert env == '{"k": "v"}'
    assert control_pb2.RunSpec.FromString(blob) == spec
    with pytest.raises(InvalidRequest):
        journal.finish_run("r1", control_pb2.RUN_STATE_RUNNING, "", T0)
    with pytest.raises(UnknownRun):
        journal.finish_run("nope", control_pb2.RUN_STATE_SUCCEEDED, "", T0)
    journal.finish_run("r1", control_pb2.RUN_STATE_SUCCEEDED, "ok", T0 + 5)
    summary = control_pb2.RunSummary(spec=spec, state=control_pb2.RUN_STATE_SUCCEEDED)
    first = journal.store_summary("r1", summary, T0 + 6)
    second = journal.store_summary("r1", summary, T0 + 7)
    assert second > first
    rows = journal.connection().execute("SELECT run_id, summary FROM summaries ORDER BY id")
    assert [(r, control_pb2.RunSummary.FromString(s)) for r, s in rows] == [("r1", summary)] * 2


def test_readers_see_commits_while_the_writer_holds_the_file(journal: Journal) -> None:
    reader = open_reader(journal.path)
    try:
        journal.commit_batches([("a1", make_batch(1, 4))], T0)
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 4
        with pytest.raises(sqlite3.OperationalError):
            reader.execute("DELETE FROM events")
    finally:
        reader.close()


def test_unusable_path_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(JournalError, match="cannot open journal"):
        Journal.open(tmp_path / "file" / "journal.sqlite")
    (tmp_path / "garbage.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(JournalError):
        Journal.open(tmp_path / "garbage.sqlite")

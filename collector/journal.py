"""The journal: one SQLite file that is the collector's source of truth.

Agents keep every batch until the collector acknowledges it, and the collector
acknowledges a batch only after this journal has committed it, so the journal
must survive a SIGKILL (and a power cut) without losing a committed transaction:
WAL mode with ``synchronous=FULL`` fsyncs the log on every commit. Group commit
(``commit_batches`` takes many batches in one transaction) amortises that fsync
over everything that arrived meanwhile.

Everything InfluxDB, summaries and reports show is derived from these tables
(their DDL is in ``collector.schema``); the schema is a contract with
``collector.exporting`` and ``collector.summaries``:
columns and indexes may be added, never renamed. Times are int64 ns. Every
observation keeps its raw agent time (``time_ns``) beside the corrected one
(``corrected_ns = time_ns + offset_ns`` of the batch's clock estimate, the
collector timebase of DESIGN.md). Conventions the readers rely on:

- ``events.run_id`` is ``''`` for pods outside any run (the column is NOT NULL);
  ``samples``/``probes`` use NULL there, and ``pod_uid`` NULL marks a node sample.
- Empty strings and zero "unset" protobuf values (namespace, name, reason,
  container, attributes, monotonic and API times) are stored as NULL.
- A batch without a clock estimate is stored with offset 0 and clock uncertainty
  -1 (unknown). ``batches`` keeps each batch's clock estimate (the one that
  corrected its records); ``agents.offset_*`` is the estimate of the agent's
  highest-sequence batch that had one, so a late older batch never rolls it back.
- ``pods.first_seen_ns`` is the corrected time of the record that introduced the
  pod; ordinals are 0, 1, 2... per run in order of first sight.

One ``Journal`` owns the only writer connection and is not thread-safe: the
ingest calls it from one dedicated thread. Readers open their own connections
(``open_reader``); WAL lets them read while the writer commits.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from rtbench.v1 import agent_pb2, control_pb2, events_pb2

from .errors import InvalidRequest, JournalError, RunExists, UnknownRun
from .schema import SCHEMA, SCHEMA_VERSION, add_columns

__all__ = ["SCHEMA", "SCHEMA_VERSION", "TERMINAL_STATES", "Journal", "open_reader"]

TERMINAL_STATES = frozenset(
    {
        control_pb2.RUN_STATE_SUCCEEDED,
        control_pb2.RUN_STATE_FAILED,
        control_pb2.RUN_STATE_TIMED_OUT,
        control_pb2.RUN_STATE_ABORTED,
    }
)

_UNKNOWN_UNCERTAINTY = -1
"""Clock uncertainty recorded for a batch that carried no offset estimate."""

_INSERT_EVENT = (
    "INSERT INTO events(agent_id, sequence, run_id, pod_uid, namespace, name, node, phase,"
    " source, time_ns, corrected_ns, monotonic_ns, uncertainty_ns, clock_uncertainty_ns,"
    " api_time_ns, reason, container, attributes)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_SAMPLE = (
    "INSERT INTO samples(agent_id, sequence, node, run_id, pod_uid, time_ns, corrected_ns,"
    " mem_total_bytes, mem_available_bytes, cpu_busy, pod_memory_bytes)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_PROBE = (
    "INSERT INTO probes(agent_id, sequence, node, run_id, pod_uid, time_ns, corrected_ns,"
    " ok, latency_ns, status_code, error) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_POD = (
    "INSERT INTO pods(run_id, uid, ordinal, namespace, name, node, labels, first_seen_ns)"
    " VALUES (?,?,?,?,?,?,?,?)"
)


def _json(mapping: Mapping[str, str]) -> str | None:
    return json.dumps(dict(mapping), sort_keys=True, separators=(",", ":")) if mapping else None


def open_reader(path: Path, *, any_thread: bool = False) -> sqlite3.Connection:
    """A read-only connection to a journal, for any thread that reads while the writer writes.

    ``any_thread``: the connection may be used (one thread at a time, the caller
    serialises) and closed from other threads than the one that opened it.
    """
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, timeout=10.0, check_same_thread=not any_thread
        )
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open journal {path} for reading: {exc}") from exc
    return conn


class Journal:
    """The single writer of one journal file (see the module docstring)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, collector_id: str) -> None:
        self._path = path
        self._conn = conn
        self._collector_id = collector_id
        # Caches of what the database already says, so the hot path of
        # commit_batches does no lookups; cleared whenever a transaction fails.
        self._agent_nodes: dict[str, str] = {}
        self._committed: dict[str, int] = {}
        self._pods: dict[str, dict[str, int]] = {}

    @classmethod
    def open(cls, path: Path) -> Journal:
        """Opens or creates the journal at ``path``; raises JournalError."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"journal {path}: SQLite refused WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            add_columns(conn)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            version = int(meta.get("schema_version", SCHEMA_VERSION))
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {path} has schema version {version}, newer than this "
                    f"collector's {SCHEMA_VERSION}"
                )
            collector_id = meta.get("collector_id") or uuid.uuid4().hex
            conn.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("collector_id", collector_id)],
            )
            conn.execute("COMMIT")
        except JournalError:
            conn.close()
            raise
        except (sqlite3.Error, ValueError) as exc:
            conn.close()
            raise JournalError(f"cannot initialise journal {path}: {exc}") from exc
        return cls(path, conn, collector_id)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def collector_id(self) -> str:
        return self._collector_id

    def connection(self) -> sqlite3.Connection:
        """The writer connection, for readers on the writer's own thread."""
        return self._conn

    def close(self) -> None:
        self._conn.close()

    # -- agents and batches ---------------------------------------------------

    def upsert_agent(self, hello: agent_pb2.Hello, now_ns: int) -> int:
        """Records an agent's (re)connection; returns its contiguous committed sequence."""
        with self._transaction("record agent"):
            self._conn.execute(
                "INSERT INTO agents(agent_id, node, agent_version, node_facts, first_seen_ns,"
                " last_seen_ns) VALUES (?,?,?,?,?,?) ON CONFLICT(agent_id) DO UPDATE SET"
                " node=excluded.node, agent_version=excluded.agent_version,"
                " node_facts=excluded.node_facts, last_seen_ns=excluded.last_seen_ns",
                (
                    hello.agent_id,
                    hello.node,
                    hello.agent_version,
                    hello.node_facts.SerializeToString(),
                    now_ns,
                    now_ns,
                ),
            )
            committed = self._load_agent(hello.agent_id)
        self._agent_nodes[hello.agent_id] = hello.node
        return committed

    def commit_batches(
        self, items: Sequence[tuple[str, agent_pb2.Batch]], received_ns: int
    ) -> list[bool]:
        """Stores batches in one transaction; per item True = stored, False = duplicate."""
        stored: list[bool] = []
        sequences: dict[str, set[int]] = {}
        # Per agent, the highest-sequence batch of this group with a clock.
        clocked: dict[str, agent_pb2.Batch] = {}
        with self._transaction("commit batches"):
            for agent_id, batch in items:
                fresh = self._store_batch(agent_id, batch, received_ns)
                stored.append(fresh)
                if fresh:
                    sequences.setdefault(agent_id, set()).add(batch.sequence)
                    newest = clocked.get(agent_id)
                    if batch.HasField("clock") and (
                        newest is None or batch.sequence > newest.sequence
                    ):
                        clocked[agent_id] = batch
            for agent_id, seqs in sequences.items():
                self._advance_agent(agent_id, seqs, clocked.get(agent_id), received_ns)
        return stored

    def _store_batch(self, agent_id: str, batch: agent_pb2.Batch, received_ns: int) -> bool:
        conn = self._conn
        has_clock = batch.HasField("clock")
        offset = batch.clock.offset_ns if has_clock else 0
        clock_unc = batch.clock.uncertainty_ns if has_clock else _UNKNOWN_UNCERTAINTY
        seq = batch.sequence
        events, samples, probes = batch.events, batch.samples, batch.probes
        cur = conn.execute(
            "INSERT OR IGNORE INTO batches(agent_id, sequence, received_ns, sealed_ns, events,"
            " samples, probes, offset_ns, offset_uncertainty_ns, offset_measured_at_ns,"
            " offset_samples) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                agent_id,
                seq,
                received_ns,
                batch.sealed_ns or None,
                len(events),
                len(samples),
                len(probes),
                offset,
                clock_unc,
                batch.clock.measured_at_ns if has_clock else None,
                batch.clock.samples if has_clock else None,
            ),
        )
        if cur.rowcount == 0:
            return False
        agent_node: str | None = self._agent_nodes.get(agent_id)
        if agent_node is None:
            self._load_agent(agent_id)
            agent_node = self._agent_nodes[agent_id] or None
        new_pods: list[tuple[object, ...]] = []
        if events:
            rows = []
            for ev in events:
                pod = ev.pod
                t = ev.time_ns
                run_id = pod.run_id
                node = pod.node or agent_node
                if run_id:
                    self._see_pod(pod, node, t + offset, new_pods)
                rows.append(
                    (
                        agent_id,
                        seq,
                        run_id,
                        pod.uid,
                        pod.namespace or None,
                        pod.name or None,
                        node,
                        ev.phase,
                        ev.source,
                        t,
                        t + offset,
                        ev.monotonic_ns or None,
                        ev.uncertainty_ns,
                        clock_unc,
                        ev.api_time_ns or None,
                        ev.reason or None,
                        ev.container or None,
                        _json(ev.attributes),
                    )
                )
            conn.executemany(_INSERT_EVENT, rows)
        if samples:
            srows = []
            for s in samples:
                where = self._placed(agent_id, seq, agent_node, offset, s.pod, s.time_ns, new_pods)
                srows.append(
                    (
                        *where,
                        s.mem_total_bytes,
                        s.mem_available_bytes,
                        s.cpu_busy,
                        s.pod_memory_bytes,
                    )
                )
            conn.executemany(_INSERT_SAMPLE, srows)
        if probes:
            prows = []
            for p in probes:
                where = self._placed(agent_id, seq, agent_node, offset, p.pod, p.time_ns, new_pods)
                prows.append((*where, int(p.ok), p.latency_ns, p.status_code, p.error or None))
            conn.executemany(_INSERT_PROBE, prows)
        if new_pods:
            conn.executemany(_INSERT_POD, new_pods)
        return True

    def _placed(
        self,
        agent_id: str,
        seq: int,
        agent_node: str | None,
        offset: int,
        pod: events_pb2.PodRef,
        t: int,
        new_pods: list[tuple[object, ...]],
    ) -> tuple[object, ...]:
        """The leading columns of a sample or probe row; notes a run pod seen first here."""
        node = pod.node or agent_node
        if pod.run_id and pod.uid:
            self._see_pod(pod, node, t + offset, new_pods)
        return (agent_id, seq, node, pod.run_id or None, pod.uid or None, t, t + offset)

    def _see_pod(
        self,
        pod: events_pb2.PodRef,
        node: str | None,
        first_seen_ns: int,
        new_pods: list[tuple[object, ...]],
    ) -> None:
        run_id = pod.run_id
        known = self._pods.get(run_id)
        if known is None:
            known = dict(
                self._conn.execute("SELECT uid, ordinal FROM pods WHERE run_id = ?", (run_id,))
            )
            self._pods[run_id] = known
        if pod.uid in known:
            return
        ordinal = len(known)
        known[pod.uid] = ordinal
        new_pods.append(
            (
                run_id,
                pod.uid,
                ordinal,
                pod.namespace or None,
                pod.name or None,
                node,
                _json(pod.labels),
                first_seen_ns,
            )
        )

    def _load_agent(self, agent_id: str) -> int:
        """Reads (or creates, for a batch from an agent never seen) the agent's row."""
        row = self._conn.execute(
            "SELECT node, committed_sequence FROM agents WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        if row is None:
            # Only reachable through the library API: the ingest always records
            # the Hello first. Keep the batch rather than refuse it.
            self._conn.execute("INSERT INTO agents(agent_id, node) VALUES (?, '')", (agent_id,))
            row = ("", 0)
        self._agent_nodes[agent_id] = row[0]
        self._committed[agent_id] = row[1]
        return int(row[1])

    def _advance_agent(
        self, agent_id: str, seqs: set[int], clocked: agent_pb2.Batch | None, now_ns: int
    ) -> None:
        committed = self._committed[agent_id]
        if committed + 1 in seqs:
            # The contiguous prefix can only grow past a batch stored just now;
            # the cursor steps lazily, so a gap ends the walk after one row.
            for (seq,) in self._conn.execute(
                "SELECT sequence FROM batches WHERE agent_id = ? AND sequence > ?"
                " ORDER BY sequence",
                (agent_id, committed),
            ):
                if seq != committed + 1:
                    break
                committed = seq
            self._committed[agent_id] = committed
        if clocked is not None and self._has_newer_clock(agent_id, clocked.sequence):
            clocked = None  # a batch sent after it already set the agent's offset
        if clocked is not None:
            clock = clocked.clock
            self._conn.execute(
                "UPDATE agents SET committed_sequence=?, last_seen_ns=?, offset_ns=?,"
                " offset_uncertainty_ns=?, offset_measured_at_ns=?, offset_samples=?"
                " WHERE agent_id=?",
                (
                    committed,
                    now_ns,
                    clock.offset_ns,
                    clock.uncertainty_ns,
                    clock.measured_at_ns,
                    clock.samples,
                    agent_id,
                ),
            )
        else:
            self._conn.execute(
                "UPDATE agents SET committed_sequence=?, last_seen_ns=? WHERE agent_id=?",
                (committed, now_ns, agent_id),
            )

    def _has_newer_clock(self, agent_id: str, sequence: int) -> bool:
        """Whether a stored batch of the agent after ``sequence`` carried a clock
        (a range scan from ``sequence`` on: empty in the usual, in-order case)."""
        row = self._conn.execute(
            "SELECT 1 FROM batches WHERE agent_id = ? AND sequence > ?"
            " AND offset_uncertainty_ns >= 0 LIMIT 1",
            (agent_id, sequence),
        ).fetchone()
        return row is not None

    # -- runs -----------------------------------------------------------------

    def register_run(self, spec: control_pb2.RunSpec, now_ns: int) -> None:
        """Adds a run in state REGISTERED; raises RunExists for a known run id."""
        if not spec.run_id:
            raise InvalidRequest("run spec has no run_id")
        try:
            with self._transaction("register run"):
                self._conn.execute(
                    "INSERT INTO runs(run_id, test_id, runtime_class, variant, replicas, image,"
                    " memory_limit, repetition, namespace, plan_id, environment, spec, state,"
                    " registered_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        spec.run_id,
                        spec.test_id,
                        spec.runtime_class,
                        spec.variant,
                        spec.replicas,
                        spec.image,
                        spec.memory_limit,
                        spec.repetition,
                        spec.namespace,
                        spec.plan_id,
                        json.dumps(dict(spec.environment), sort_keys=True),
                        spec.SerializeToString(deterministic=True),
                        control_pb2.RUN_STATE_REGISTERED,
                        now_ns,
                    ),
                )
        except JournalError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise RunExists(spec.run_id) from None
            raise

    def record_create(
        self,
        run_id: str,
        created_ns: int,
        request_sent_ns: int,
        response_received_ns: int,
        rtctl_clock: events_pb2.ClockOffset,
    ) -> None:
        """Stores the run's created time (collector timebase) and raw rtctl times; RUNNING."""
        with self._transaction("record create"):
            cur = self._conn.execute(
                "UPDATE runs SET created_ns=?, created_raw_ns=?, create_response_raw_ns=?,"
                " rtctl_offset_ns=?, rtctl_uncertainty_ns=?,"
                " state = CASE WHEN state IN (?, ?) THEN ? ELSE state END WHERE run_id=?",
                (
                    created_ns,
                    request_sent_ns,
                    response_received_ns,
                    rtctl_clock.offset_ns,
                    rtctl_clock.uncertainty_ns,
                    control_pb2.RUN_STATE_REGISTERED,
                    control_pb2.RUN_STATE_RUNNING,
                    control_pb2.RUN_STATE_RUNNING,
                    run_id,
                ),
            )
            if cur.rowcount == 0:
                raise UnknownRun(run_id)

    def finish_run(self, run_id: str, state: int, message: str, now_ns: int) -> None:
        """Marks the run finished in a terminal state."""
        if state not in TERMINAL_STATES:
            raise InvalidRequest(f"run state {state} is not a terminal state")
        with self._transaction("finish run"):
            cur = self._conn.execute(
                "UPDATE runs SET state=?, message=?, finished_ns=? WHERE run_id=?",
                (state, message or None, now_ns, run_id),
            )
            if cur.rowcount == 0:
                raise UnknownRun(run_id)

    def store_summary(self, run_id: str, summary: control_pb2.RunSummary, now_ns: int) -> int:
        """Appends a computed summary (the exporter ships it); returns its row id."""
        with self._transaction("store summary"):
            cur = self._conn.execute(
                "INSERT INTO summaries(run_id, computed_ns, summary) VALUES (?,?,?)",
                (run_id, now_ns, summary.SerializeToString(deterministic=True)),
            )
        return int(cur.lastrowid or 0)

    def _transaction(self, what: str) -> _Transaction:
        return _Transaction(self, what)

    def _forget_caches(self) -> None:
        self._agent_nodes.clear()
        self._committed.clear()
        self._pods.clear()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT; on any failure ROLLBACK, drop the caches, raise JournalError.

    Errors of the collector's own hierarchy (UnknownRun...) pass through unchanged
    after the rollback.
    """

    def __init__(self, journal: Journal, what: str) -> None:
        self._journal = journal
        self._what = what

    def __enter__(self) -> None:
        try:
            self._journal._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise JournalError(f"{self._what}: cannot begin a transaction: {exc}") from exc

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        conn = self._journal._conn
        if exc is None:
            try:
                conn.execute("COMMIT")
                return
            except sqlite3.Error as commit_exc:
                exc = commit_exc
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite may already have rolled back (e.g. after SQLITE_FULL)
        self._journal._forget_caches()
        if isinstance(exc, sqlite3.Error | OverflowError | ValueError | TypeError):
            raise JournalError(f"{self._what} in {self._journal.path}: {exc}") from exc

"""Ships the journal to InfluxDB in the background, so Grafana sees runs as they happen.

The journal is the source of truth; InfluxDB is a view of it that may lag or be
down for a while. The exporter reads the journal with its own SQLite connection
(WAL lets it read while the ingest writes), one cursor per stream (events,
probes, samples, summaries): rows ``WHERE id > cursor ORDER BY id``, joined with
their run (test id, runtime class, variant, created time) and pod ordinal,
rendered as line protocol (``collector.lineprotocol``, which documents the
measurements), written, and only then the cursors advance, in a small write
transaction of their own. Delivery is therefore at least once; a resend after a
crash writes points with the same measurement, tags and timestamp, which
InfluxDB overwrites rather than doubles.

Batching: a batch holds up to ``batch_lines`` lines across the streams (their
order rotates, so one busy stream cannot starve the others). A full batch is
sent at once and the next read follows immediately; smaller ones go out at
most every ``flush_interval_s``, and when idle the exporter notices new rows
within a few tens of ms (``PRAGMA data_version``), which keeps the time from
journal commit to InfluxDB well under a second at moderate load.

Failures follow ``collector.influxwrite``: retried forever with capped backoff
(network, 5xx, 429; 401/403/404 slowly), split on 413, bad lines isolated on
400 and kept in ``export_dead_letters`` with InfluxDB's answer, then skipped.

One wait on purpose: rtctl records a run's create time just after the
Kubernetes create call returns, so an agent can now and then report a pod of a
run before that record lands. Such events are held back for up to
``CREATE_GRACE_S`` so that their points carry ``latency_ms``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from collector.errors import JournalError
from collector.influxwrite import Delivery, ExportError, InfluxTarget, InvalidTarget, Rejected
from collector.journal import open_reader
from collector.lineprotocol import pod_phase_line, probe_line, sample_line, summary_lines
from rtbench.clock import wall_ns
from rtbench.v1 import control_pb2

__all__ = ["STREAMS", "ExportStats", "Exporter", "InfluxTarget", "InvalidTarget"]

log = logging.getLogger("collector.export")

T = TypeVar("T")

STREAMS = ("events", "probes", "samples", "summaries")
CREATE_GRACE_S = 5.0
# How often an idle exporter looks for new rows: cheap (one pragma), and short
# next to the 1 s journal-to-InfluxDB target.
IDLE_POLL_S = 0.02
BACKLOG_CACHE_S = 0.1
JOURNAL_RETRY_S = 1.0
# The ingest writer holds the write lock for one group commit at a time; the
# cursor update waits for it rather than failing.
BUSY_TIMEOUT_MS = 10_000
_REGISTERED = control_pb2.RUN_STATE_REGISTERED

_QUERIES = {
    "events": """
        SELECT e.id, e.run_id, e.pod_uid, e.namespace, e.name, e.node, e.phase, e.source,
               e.time_ns, e.corrected_ns, e.uncertainty_ns, e.clock_uncertainty_ns,
               e.reason, e.container, r.test_id, r.runtime_class, r.variant,
               r.created_ns, r.state AS run_state, r.registered_ns, p.ordinal
        FROM events e
        LEFT JOIN runs r ON r.run_id = e.run_id
        LEFT JOIN pods p ON p.run_id = e.run_id AND p.uid = e.pod_uid
        WHERE e.id > ? ORDER BY e.id LIMIT ?""",
    "probes": """
        SELECT b.id, b.run_id, b.pod_uid, b.node, b.corrected_ns, b.ok, b.latency_ns,
               b.status_code, b.error, r.test_id, r.runtime_class, r.variant, p.ordinal
        FROM probes b
        LEFT JOIN runs r ON r.run_id = b.run_id
        LEFT JOIN pods p ON p.run_id = b.run_id AND p.uid = b.pod_uid
        WHERE b.id > ? ORDER BY b.id LIMIT ?""",
    "samples": """
        SELECT s.id, s.run_id, s.pod_uid, s.node, s.corrected_ns, s.mem_total_bytes,
               s.mem_available_bytes, s.cpu_busy, s.pod_memory_bytes,
               r.test_id, r.runtime_class, r.variant, p.ordinal
        FROM samples s
        LEFT JOIN runs r ON r.run_id = s.run_id
        LEFT JOIN pods p ON p.run_id = s.run_id AND p.uid = s.pod_uid
        WHERE s.id > ? ORDER BY s.id LIMIT ?""",
    "summaries": """
        SELECT id, run_id, computed_ns, summary FROM summaries
        WHERE id > ? ORDER BY id LIMIT ?""",
}

_RENDER: dict[str, Callable[[sqlite3.Row], str | None]] = {
    "events": pod_phase_line,
    "probes": probe_line,
    "samples": sample_line,
}

_BACKLOG_QUERY = " + ".join(
    f"((SELECT coalesce(max(id), 0) FROM {s})"
    f" - coalesce((SELECT last_id FROM export_cursors WHERE stream = '{s}'), 0))"
    for s in STREAMS
)


@dataclass
class ExportStats:
    """Counters since the exporter started, for logs and the collector's stats line."""

    points_written: int = 0
    batches: int = 0
    retries: int = 0
    dead_lettered: int = 0
    """Lines InfluxDB rejected, kept in export_dead_letters."""
    splits: int = 0
    """Times a batch was halved (413, or isolating bad lines after a 400)."""
    skipped: int = 0
    """Rows with no point: events, pod samples and probes of pods outside any run,
    unrenderable rows."""
    last_error: str = ""


@dataclass
class _Batch:
    lines: list[str] = field(default_factory=list)
    owners: list[tuple[str, int]] = field(default_factory=list)
    """(stream, row id) of each line, to name the rows of a dead letter."""
    advance: dict[str, int] = field(default_factory=dict)
    full: bool = False
    held: bool = False


class Exporter:
    """Ships journal rows to one InfluxDB target until cancelled."""

    def __init__(self, journal_path: Path, target: InfluxTarget) -> None:
        self._path = journal_path
        self._target = target
        self.stats = ExportStats()
        self._cursors: dict[str, int] = {}
        """Persisted positions: everything up to them is in InfluxDB (or dead-lettered)."""
        self._read_pos: dict[str, int] = {}
        """Where the next read starts; ahead of _cursors while a batch is in flight."""
        self._rotation = 0
        self._dead_letter_episode = False
        self._backlog_lock = threading.Lock()
        self._backlog_conn: sqlite3.Connection | None = None
        self._backlog_closed = False
        """Set when run() ends: backlog() then never opens a connection again."""
        self._backlog_value = 0
        self._backlog_at = float("-inf")

    async def run(self) -> None:
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="export-sqlite")
        loop = asyncio.get_running_loop()

        def in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
            # One thread owns the connection: a cancelled await never leaves a
            # query running while the connection is being closed.
            return loop.run_in_executor(executor, fn, *args)

        writer = self._target.writer()
        conn: sqlite3.Connection | None = None
        try:
            conn = await in_thread(self._connect)
            log.info("exporting %s to InfluxDB %s", self._path, self._target.describe())
            delivery = Delivery(writer, self._target.max_retry_s, self._on_retry, self._on_split)
            await self._loop(conn, delivery, in_thread)
        finally:
            if conn is not None:
                await in_thread(conn.close)
            executor.shutdown(wait=True)
            await writer.close()
            # Under the lock, so a backlog() still running in some thread either
            # finishes with the connection first or finds it closed for good.
            with self._backlog_lock:
                self._backlog_closed = True
                if self._backlog_conn is not None:
                    self._backlog_conn.close()
                    self._backlog_conn = None

    async def _loop(
        self,
        conn: sqlite3.Connection,
        delivery: Delivery,
        in_thread: Callable[..., asyncio.Future[Any]],
    ) -> None:
        next_flush = 0.0
        # After a full batch the next one is read and rendered while the
        # current one is in flight: InfluxDB and the renderer then work at
        # the same time instead of taking turns.
        ahead: asyncio.Future[_Batch] | None = None
        try:
            while True:
                delay = next_flush - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    if ahead is not None:
                        batch, ahead = await ahead, None
                        if not batch.advance:
                            continue  # read again, with a data version taken first
                    else:
                        seen: int = await in_thread(_data_version, conn)
                        batch = await in_thread(self._read_batch, conn)
                        if not batch.advance:
                            await self._wait_for_rows(conn, seen, batch.held, in_thread)
                            continue
                    started = time.monotonic()
                    if batch.full:
                        ahead = in_thread(self._read_batch, conn)
                    rejected = await delivery.deliver(batch.lines) if batch.lines else []
                    await in_thread(self._commit, conn, batch, rejected)
                except (sqlite3.Error, JournalError) as exc:
                    # The journal is busy or briefly unreadable: what was
                    # delivered but not recorded is sent again, which InfluxDB
                    # absorbs; reading restarts from the recorded cursors.
                    if ahead is not None:
                        ahead.cancel()
                        ahead = None
                    await in_thread(self._rewind)
                    self.stats.last_error = str(exc)
                    log.warning("export paused, journal error: %s", exc)
                    next_flush = time.monotonic() + JOURNAL_RETRY_S
                    continue
                self._account(batch, rejected)
                next_flush = 0.0 if batch.full else started + self._target.flush_interval_s
        finally:
            if ahead is not None:
                # The single SQLite thread finishes it before closing the connection.
                ahead.cancel()

    async def _wait_for_rows(
        self,
        conn: sqlite3.Connection,
        seen: int,
        held: bool,
        in_thread: Callable[..., asyncio.Future[Any]],
    ) -> None:
        """Until another connection commits; held rows are looked at again after
        a flush interval even if nothing else arrives."""
        deadline = time.monotonic() + max(self._target.flush_interval_s, IDLE_POLL_S)
        while not held or time.monotonic() < deadline:
            await asyncio.sleep(IDLE_POLL_S)
            if await in_thread(_data_version, conn) != seen:
                return

    def backlog(self) -> int:
        """Journal rows not yet exported (held ones included); cached ~100 ms.

        Safe from any thread: it reads through its own read-only connection,
        counted independently of the export loop, so it keeps growing while
        InfluxDB is down. 0 while the journal does not exist yet. Once run()
        has ended it returns the last value and opens nothing.
        """
        with self._backlog_lock:
            now = time.monotonic()
            if self._backlog_closed or now - self._backlog_at < BACKLOG_CACHE_S:
                return self._backlog_value
            try:
                if self._backlog_conn is None:
                    # Used from whichever thread asks, closed by run(): the lock serialises.
                    self._backlog_conn = open_reader(self._path, any_thread=True)
                (value,) = self._backlog_conn.execute(f"SELECT {_BACKLOG_QUERY}").fetchone()
            except (sqlite3.Error, JournalError) as exc:
                log.debug("backlog unavailable: %s", exc)
                return self._backlog_value
            self._backlog_value = max(0, int(value))
            self._backlog_at = now
            return self._backlog_value

    # -- in the SQLite thread --------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if not self._path.exists():
            raise JournalError(f"journal {self._path} does not exist")
        try:
            conn = sqlite3.connect(
                f"file:{self._path}?mode=rw",
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Losing the last cursor update to a power cut only means a
            # resend, which InfluxDB absorbs: no fsync per cursor commit.
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self._path}: {exc}") from exc
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = self._open()
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT stream, last_id FROM export_cursors").fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(f"{self._path} is not a usable rtbench journal: {exc}") from exc
        self._cursors = dict.fromkeys(STREAMS, 0)
        self._cursors.update({row["stream"]: int(row["last_id"]) for row in rows})
        self._read_pos = dict(self._cursors)
        return conn

    def _read_batch(self, conn: sqlite3.Connection) -> _Batch:
        batch = _Batch()
        order = STREAMS[self._rotation :] + STREAMS[: self._rotation]
        self._rotation = (self._rotation + 1) % len(STREAMS)
        for stream in order:
            room = self._target.batch_lines - len(batch.lines)
            if room <= 0:
                batch.full = True
                break
            rows = conn.execute(_QUERIES[stream], (self._read_pos[stream], room)).fetchall()
            if len(rows) == room:
                batch.full = True
            for row in rows:
                if stream == "events" and _held(row):
                    batch.full = False
                    batch.held = True
                    break
                for line in self._render(stream, row):
                    batch.lines.append(line)
                    batch.owners.append((stream, row["id"]))
                batch.advance[stream] = row["id"]
        self._read_pos.update(batch.advance)
        return batch

    def _rewind(self) -> None:
        self._read_pos = dict(self._cursors)

    def _render(self, stream: str, row: sqlite3.Row) -> Iterable[str]:
        try:
            if stream == "summaries":
                summary = control_pb2.RunSummary.FromString(row["summary"])
                return list(summary_lines(summary, row["computed_ns"]))
            line = _RENDER[stream](row)
        except (ValueError, TypeError, DecodeError) as exc:
            # A row the schema cannot express (e.g. no field at all): say so
            # once per row and move on rather than stall the stream.
            log.warning("%s row %d not exported: %s", stream, row["id"], exc)
            line = None
        if line is None:
            self.stats.skipped += 1
            return []
        return [line]

    def _commit(self, conn: sqlite3.Connection, batch: _Batch, rejected: list[Rejected]) -> None:
        now = wall_ns()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for chunk in rejected:
                for stream, ids, lines in _by_stream(batch, chunk):
                    conn.execute(
                        "INSERT INTO export_dead_letters"
                        "(stream, first_id, last_id, status, error, lines, at_ns)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (stream, min(ids), max(ids), chunk.status, chunk.error, lines, now),
                    )
            conn.executemany(
                "INSERT INTO export_cursors(stream, last_id) VALUES (?, ?)"
                " ON CONFLICT(stream) DO UPDATE SET last_id = excluded.last_id",
                list(batch.advance.items()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise JournalError(f"cannot store export cursors in {self._path}: {exc}") from exc
        self._cursors.update(batch.advance)

    # -- bookkeeping on the event loop ----------------------------------------

    def _account(self, batch: _Batch, rejected: list[Rejected]) -> None:
        bad = sum(len(chunk.lines) for chunk in rejected)
        self.stats.batches += 1
        self.stats.points_written += len(batch.lines) - bad
        if not rejected:
            self._dead_letter_episode = False
            return
        self.stats.dead_lettered += bad
        self.stats.last_error = rejected[-1].error
        if not self._dead_letter_episode:
            self._dead_letter_episode = True
            log.error(
                "InfluxDB rejected %d lines; kept in export_dead_letters of %s: %s",
                bad,
                self._path,
                rejected[0].error,
            )

    def _on_retry(self, exc: ExportError) -> None:
        self.stats.retries += 1
        self.stats.last_error = str(exc)

    def _on_split(self) -> None:
        self.stats.splits += 1


def _data_version(conn: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the journal."""
    (version,) = conn.execute("PRAGMA data_version").fetchone()
    return int(version)


def _held(row: sqlite3.Row) -> bool:
    """An event of a run that is registered but whose create time has not arrived yet."""
    if row["run_state"] != _REGISTERED or row["created_ns"] is not None:
        return False
    registered = row["registered_ns"]
    return registered is not None and wall_ns() - registered < CREATE_GRACE_S * 1e9


def _by_stream(batch: _Batch, chunk: Rejected) -> Iterable[tuple[str, list[int], str]]:
    groups: dict[str, tuple[list[int], list[str]]] = {}
    for offset, line in enumerate(chunk.lines):
        stream, row_id = batch.owners[chunk.start + offset]
        ids, lines = groups.setdefault(stream, ([], []))
        ids.append(row_id)
        lines.append(line)
    for stream, (ids, lines) in groups.items():
        yield stream, ids, "\n".join(lines)

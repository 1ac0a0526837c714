"""The journal's tables, as one DDL script, and how an older journal file is brought up to date.

Kept apart from ``collector.journal`` (which writes the tables) so the shape of
the source of truth reads in one place: the exporter and the summaries query
these tables by name. Tables and columns are only ever added, never renamed.
"""

from __future__ import annotations

import sqlite3

__all__ = ["ADDED_COLUMNS", "SCHEMA", "SCHEMA_VERSION", "add_columns"]

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS agents(
  agent_id TEXT PRIMARY KEY, node TEXT NOT NULL, agent_version TEXT, node_facts BLOB,
  first_seen_ns INTEGER, last_seen_ns INTEGER, committed_sequence INTEGER NOT NULL DEFAULT 0,
  offset_ns INTEGER, offset_uncertainty_ns INTEGER, offset_measured_at_ns INTEGER,
  offset_samples INTEGER);
CREATE TABLE IF NOT EXISTS batches(
  agent_id TEXT NOT NULL, sequence INTEGER NOT NULL, received_ns INTEGER NOT NULL,
  sealed_ns INTEGER, events INTEGER, samples INTEGER, probes INTEGER,
  offset_ns INTEGER, offset_uncertainty_ns INTEGER, offset_measured_at_ns INTEGER,
  offset_samples INTEGER,
  PRIMARY KEY(agent_id, sequence)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs(
  run_id TEXT PRIMARY KEY, test_id TEXT, runtime_class TEXT, variant TEXT, replicas INTEGER,
  image TEXT, memory_limit TEXT, repetition INTEGER, namespace TEXT, plan_id TEXT,
  environment TEXT, spec BLOB, state INTEGER NOT NULL,
  registered_ns INTEGER, created_ns INTEGER, created_raw_ns INTEGER,
  create_response_raw_ns INTEGER, rtctl_offset_ns INTEGER, rtctl_uncertainty_ns INTEGER,
  finished_ns INTEGER, message TEXT);
CREATE TABLE IF NOT EXISTS pods(
  run_id TEXT NOT NULL, uid TEXT NOT NULL, ordinal INTEGER NOT NULL,
  namespace TEXT, name TEXT, node TEXT, labels TEXT, first_seen_ns INTEGER,
  PRIMARY KEY(run_id, uid), UNIQUE(run_id, ordinal));
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, sequence INTEGER NOT NULL,
  run_id TEXT NOT NULL, pod_uid TEXT NOT NULL, namespace TEXT, name TEXT, node TEXT,
  phase INTEGER NOT NULL, source INTEGER NOT NULL,
  time_ns INTEGER NOT NULL, corrected_ns INTEGER NOT NULL,
  monotonic_ns INTEGER, uncertainty_ns INTEGER NOT NULL DEFAULT 0,
  clock_uncertainty_ns INTEGER NOT NULL DEFAULT 0, api_time_ns INTEGER,
  reason TEXT, container TEXT, attributes TEXT);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id, phase);
CREATE TABLE IF NOT EXISTS samples(
  id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, sequence INTEGER NOT NULL, node TEXT,
  run_id TEXT, pod_uid TEXT, time_ns INTEGER NOT NULL, corrected_ns INTEGER NOT NULL,
  mem_total_bytes INTEGER, mem_available_bytes INTEGER, cpu_busy REAL, pod_memory_bytes INTEGER);
CREATE INDEX IF NOT EXISTS samples_by_node ON samples(node, corrected_ns);
CREATE TABLE IF NOT EXISTS probes(
  id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, sequence INTEGER NOT NULL, node TEXT,
  run_id TEXT, pod_uid TEXT, time_ns INTEGER NOT NULL, corrected_ns INTEGER NOT NULL,
  ok INTEGER NOT NULL, latency_ns INTEGER, status_code INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS summaries(
  id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, computed_ns INTEGER NOT NULL,
  summary BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS summaries_by_run ON summaries(run_id, id);
CREATE TABLE IF NOT EXISTS export_cursors(stream TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS export_dead_letters(
  id INTEGER PRIMARY KEY, stream TEXT NOT NULL, first_id INTEGER, last_id INTEGER,
  status INTEGER, error TEXT, lines TEXT, at_ns INTEGER NOT NULL);
"""

ADDED_COLUMNS = (
    ("batches", "offset_measured_at_ns", "INTEGER"),
    ("batches", "offset_samples", "INTEGER"),
)
"""Columns added since schema version 1 was first written: journals created
before them get them on open (NULL in old rows). Adding is compatible both ways."""


def add_columns(conn: sqlite3.Connection) -> None:
    """Add the columns an older journal lacks (NULL in its existing rows)."""
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

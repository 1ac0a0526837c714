"""Agent health as InfluxDB points, so Grafana can show clock offsets, delivery lag and
when each agent was last seen.

The exporter (``collector.exporting``) ships journal rows, each one point written at
least once. Agent health is another kind of data: a gauge whose current value
matters and whose history is only for looking back. So it has a loop of its own:
every ``interval_s`` it reads the ``agents`` table (one row per agent, joined with
the agent's newest contiguously committed batch) and the collector's in-memory
counters, and writes one snapshot stamped with the collector's clock. A snapshot
that cannot be written is dropped, logged once per failure episode: the next one,
``interval_s`` later, says the same thing more recently, so there is nothing to
retry and nothing to journal.

Measurements (the rest are in ``collector.lineprotocol``):

``agent_status``  one point per node and snapshot (the most recently seen agent of
    the node; agents not seen for ``STALE_AFTER_S`` are left out). tags: node.
    fields: agent_id, connected (a stream is open now), seen_ago_s (since the
    agent's last hello or committed batch), committed_sequence, offset_ms and
    offset_uncertainty_ms (the agent's clock offset to the collector, once it
    sent one), offset_samples, delivery_lag_ms (newest committed batch: collector
    receive time minus the agent's seal time, offset-corrected).
``collector_status``  one point per snapshot, no tags. fields: agents_connected,
    export_backlog (journal rows not yet in InfluxDB), pending_batches (received,
    not yet committed).

What the agents' resend buffers hold is not on the wire (an agent keeps its
unacknowledged batches in its own spool and the contract has no field for the
count). What the collector does see of it is ``delivery_lag_ms``: close to the
agent's seal interval while the agent keeps up, and seconds to minutes while it
drains its spool after an outage, falling back as it catches up.

Errors: reading the journal raises ``JournalError`` and writing an ``ExportError``
(``collector.errors``); both are logged and the snapshot skipped, never raised
out of ``run()``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.errors import JournalError
from collector.influxwrite import ExportError, InfluxTarget, LineWriter
from collector.journal import open_reader
from collector.lineprotocol import render_line
from rtbench.clock import wall_ns

__all__ = [
    "INTERVAL_S",
    "STALE_AFTER_S",
    "CollectorGauges",
    "StatusReporter",
    "read_agents",
    "status_lines",
]

log = logging.getLogger("collector.agentstatus")

INTERVAL_S = 5.0
"""Seconds between snapshots: fine enough for "last seen" and for watching an offset
drift during a run, and 17 280 points per agent a day, nothing next to a run's pods."""
STALE_AFTER_S = 24 * 3600.0
"""Agents not seen for a day are left out: a node that was removed stops being
reported, while an agent that died during a run stays visible, its seen_ago_s
growing, for as long as anyone looks at that day."""

_AGENTS_QUERY = """
    SELECT a.agent_id, a.node, a.last_seen_ns, a.committed_sequence, a.offset_ns,
           a.offset_uncertainty_ns, a.offset_samples,
           b.received_ns, b.sealed_ns, b.offset_ns AS batch_offset_ns,
           b.offset_uncertainty_ns AS batch_uncertainty_ns
    FROM agents a
    LEFT JOIN batches b ON b.agent_id = a.agent_id AND b.sequence = a.committed_sequence
    WHERE a.last_seen_ns >= ?"""


@dataclass(frozen=True)
class CollectorGauges:
    """What the running collector knows in memory and the journal does not."""

    connected: frozenset[str]
    """Agent ids with an open stream."""
    export_backlog: int
    pending_batches: int


def read_agents(path: Path, since_ns: int) -> list[dict[str, Any]]:
    """The agents seen since ``since_ns`` with their newest committed batch (blocking).

    Opens and closes its own read-only connection, so a cancelled caller never
    leaves a connection in use. Raises JournalError.
    """
    conn = open_reader(path)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(_AGENTS_QUERY, (since_ns,))]
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read agents from {path}: {exc}") from exc
    finally:
        conn.close()


def status_lines(
    agents: Iterable[Mapping[str, Any]], gauges: CollectorGauges, now_ns: int
) -> list[str]:
    """One snapshot as line protocol: an agent_status point per node (its most recently
    seen agent) and one collector_status point, all at ``now_ns``."""
    newest: dict[str, Mapping[str, Any]] = {}
    for row in agents:
        node = row["node"] or ""
        kept = newest.get(node)
        if kept is None or (row["last_seen_ns"] or 0) > (kept["last_seen_ns"] or 0):
            newest[node] = row
    lines = [
        render_line("agent_status", {"node": node}, _agent_fields(row, gauges, now_ns), now_ns)
        for node, row in sorted(newest.items())
        if node
    ]
    lines.append(
        render_line(
            "collector_status",
            {},
            {
                "agents_connected": len(gauges.connected),
                "export_backlog": gauges.export_backlog,
                "pending_batches": gauges.pending_batches,
            },
            now_ns,
        )
    )
    return lines


def _agent_fields(
    row: Mapping[str, Any], gauges: CollectorGauges, now_ns: int
) -> dict[str, str | int | float | bool | None]:
    last_seen = row["last_seen_ns"]
    clock_known = row["offset_ns"] is not None and (row["offset_uncertainty_ns"] or 0) >= 0
    lag: float | None = None
    if row["sealed_ns"] and row["received_ns"] and (row["batch_uncertainty_ns"] or 0) >= 0:
        sealed = row["sealed_ns"] + (row["batch_offset_ns"] or 0)
        lag = (row["received_ns"] - sealed) / 1e6
    return {
        "agent_id": row["agent_id"],
        "connected": row["agent_id"] in gauges.connected,
        "seen_ago_s": max(0, now_ns - last_seen) / 1e9 if last_seen else None,
        "committed_sequence": int(row["committed_sequence"] or 0),
        "offset_ms": row["offset_ns"] / 1e6 if clock_known else None,
        "offset_uncertainty_ms": row["offset_uncertainty_ns"] / 1e6 if clock_known else None,
        "offset_samples": row["offset_samples"] if clock_known else None,
        "delivery_lag_ms": lag,
    }


class StatusReporter:
    """Writes a health snapshot to one InfluxDB target every interval until cancelled."""

    def __init__(
        self,
        journal_path: Path,
        target: InfluxTarget,
        gauges: Callable[[], CollectorGauges],
        interval_s: float = INTERVAL_S,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._path = journal_path
        self._target = target
        self._gauges = gauges
        self._interval = interval_s
        self._failing = False
        self.snapshots = 0
        """Snapshots written, for tests and logs."""

    async def run(self) -> None:
        writer = self._target.writer()
        try:
            while True:
                started = time.monotonic()
                await self.report(writer)
                await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))
        finally:
            await writer.close()

    async def report(self, writer: LineWriter) -> bool:
        """One snapshot; False (logged) when it could not be read or written."""
        now = wall_ns()
        try:
            agents = await asyncio.to_thread(
                read_agents, self._path, now - int(STALE_AFTER_S * 1e9)
            )
            lines = status_lines(agents, self._gauges(), now)
            await writer.write("\n".join(lines).encode())
        except (JournalError, ExportError) as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "agent status not written (next try in %.0f s): %s", self._interval, exc
                )
            return False
        if self._failing:
            self._failing = False
            log.info("agent status written again")
        self.snapshots += 1
        return True

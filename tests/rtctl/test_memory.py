"""Memory per pod on the local stack with the agents' default sampling, run after run.

Two ``rtctl start-run`` of kata-qemu back to back, as ``rtctl run-plan`` does
them (delete, wait until gone, settle, next run). The simulated nodes' memory
(mirrored into each agent's /proc) falls by the profile's overhead per pod plus
the workload's RSS, so each run's memory per pod must be that, for the first run
and for the second, whose "before" sample could predate the first run's
teardown and whose "after" sample could follow its own delete if either were
chosen by the clock alone (collector/summaries.py, agent/resources.py).
"""

from __future__ import annotations

import json
import sqlite3

from rtbench.v1 import events_pb2
from simcluster.profiles import DEFAULT_PROFILES
from tests.rtctl.conftest import StackFactory

MIB = 2**20
RUNTIME = "kata-qemu"
REPLICAS = 6
WORKLOAD_RSS_MAX = 8 * MIB
"""What the workload process may add to a pod's footprint beyond the runtime's
overhead: the static C server's RSS is about 1 MiB; a stale or missing sample
is off by a whole pod's overhead (152 MiB), so this bound still tells them apart."""
ROUNDING = 8 * 1024
"""meminfo counts whole kB: two readings' rounding, spread over the pods, stays below this."""


def per_node(journal: str, run_id: str) -> dict[str, tuple[int, int, int]]:
    """Per node of the run, read straight from the journal: its pods, MemAvailable at the
    agent's sample at first sight (the first node sample at or after the node's first
    scheduled pod), and at the first sample between its last ready and its first
    deletion request (the agent's sample right after the ready)."""
    P = events_pb2
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        found = {}
        nodes = conn.execute("SELECT DISTINCT node FROM events WHERE run_id = ?", (run_id,))
        for (node,) in nodes.fetchall():

            def phase_times(phase: int, node: str = node) -> list[int]:
                rows = conn.execute(
                    "SELECT MIN(corrected_ns) FROM events WHERE run_id = ? AND node = ?"
                    " AND phase = ? GROUP BY pod_uid",
                    (run_id, node, phase),
                )
                return [row[0] for row in rows]

            def sample(condition: str, *args: int, node: str = node) -> int:
                row = conn.execute(
                    "SELECT mem_available_bytes FROM samples WHERE node = ? AND pod_uid IS NULL"
                    f" AND {condition} ORDER BY corrected_ns LIMIT 1",
                    (node, *args),
                ).fetchone()
                assert row is not None, f"{run_id} on {node}: no sample where {condition} {args}"
                return int(row[0])

            ready = phase_times(P.PHASE_READY)
            first_sight = sample("corrected_ns >= ?", min(phase_times(P.PHASE_SCHEDULED)))
            after = sample(
                "corrected_ns BETWEEN ? AND ?",
                max(ready),
                min(phase_times(P.PHASE_DELETION_REQUESTED)),
            )
            found[node] = (len(ready), first_sight, after)
        return found
    finally:
        conn.close()


def test_memory_per_pod_of_back_to_back_runs_with_default_sampling(
    stack_factory: StackFactory,
) -> None:
    stack = stack_factory()
    assert stack.local.settings.agent_args == ()  # the agents' default sampling
    overhead = DEFAULT_PROFILES[RUNTIME].memory_overhead
    for run in (1, 2):
        run_id = f"memory-{run}"
        done = stack.rtctl(
            "start-run", "--runtime-class", RUNTIME, "--replicas", str(REPLICAS),
            "--test-id", "memory", "--run-id", run_id, "--format", "json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["state"] == "succeeded"
        assert summary["phases"]["ready"]["count"] == REPLICAS
        figure = summary["memory_per_pod_bytes"]
        where = f"run {run}: {figure / MIB:.2f} MiB per pod, the profile {overhead / MIB} MiB"
        assert overhead - ROUNDING <= figure <= overhead + WORKLOAD_RSS_MAX, where
        # Each node has its own "before" and an "after" ahead of the delete, so both
        # count; the summary weighs them by their pods.
        nodes = per_node(str(stack.journal), run_id)
        assert len(nodes) == 2 and sum(pods for pods, _, _ in nodes.values()) == REPLICAS
        for node, (pods, before, after) in nodes.items():
            own = (before - after) / pods
            assert overhead - ROUNDING <= own <= overhead + WORKLOAD_RSS_MAX, (
                f"{where}; {node}: {own}"
            )
        freed = sum(before - after for _, before, after in nodes.values())
        assert abs(figure - freed / REPLICAS) < 1, where

"""Benchmark of rtctl's teardown: how soon after the last pod is gone the next run may start.

Run: ``.venv/bin/python bench/rtctl_teardown.py`` (about a minute). A local
stack (simulated cluster with 2 nodes, collector, one agent per node, as
processes) runs ``--runs`` start-runs of ``--replicas`` runc pods in this
process through ``execute_run`` (settle 0). For each run:

- rtctl: from the delete request until ``wait_pods_gone`` (list, then watch
  from the resourceVersion) reported no pod left;
- baseline, in the same run: a loop that lists the run's pods every
  ``--poll-interval`` seconds (1 s, how scripts around kubectl usually wait)
  until none is left, started at the same moment;
- the ratio baseline / rtctl says how much sooner an event-driven wait lets the
  next run start (the scripts DESIGN.md describes sleep a fixed 45 s instead);
- as a check of what "gone" means: rtctl's moment minus the latest ``gone``
  event of the run in the collector's journal (the agents' own watches, same
  machine, same clock): near zero, either side.

Also per run: the API latency of the create and the delete. Median and spread
(min..max) over the runs; writes bench/results/rtctl_teardown.json and prints
one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from rtbench.v1 import events_pb2
from rtctl.control import Collector
from rtctl.display import QuietDisplay
from rtctl.kube import Cluster
from rtctl.localstack import LocalStack, StackSettings
from rtctl.startrun import RunRequest, execute_run
from rtctl.workload import RUN_ID_LABEL

RESULTS = Path(__file__).resolve().parent / "results" / "rtctl_teardown.json"


class Recorder(QuietDisplay):
    """Stamps the start of the pod wait and the moment rtctl saw the last pod go."""

    def __init__(self) -> None:
        super().__init__()
        self.deleting = asyncio.Event()
        self.delete_started_ns = 0
        self.gone_ns = 0

    def stage(self, text: str) -> None:
        super().stage(text)
        if text.startswith("deleting Deployment"):
            self.delete_started_ns = time.time_ns()
            self.deleting.set()

    def countdown(self, what: str, done: float, total: float) -> None:
        if what == "pods gone" and done >= total and not self.gone_ns:
            self.gone_ns = time.time_ns()


async def poll_until_gone(sim_url: str, run_id: str, interval_s: float) -> int:
    """The baseline: list the run's pods every ``interval_s`` until none; when it saw that."""
    url = f"{sim_url}/api/v1/namespaces/default/pods"
    params = {"labelSelector": f"{RUN_ID_LABEL}={run_id}"}
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url, params=params) as response:
                body = await response.json()
            if not body["items"]:
                return time.time_ns()
            await asyncio.sleep(interval_s)


def last_gone_ns(journal: Path, run_id: str) -> int:
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        (value,) = conn.execute(
            "SELECT MAX(corrected_ns) FROM events WHERE run_id = ? AND phase = ?",
            (run_id, events_pb2.PHASE_GONE),
        ).fetchone()
    finally:
        conn.close()
    return int(value or 0)


async def one_run(stack: LocalStack, index: int, args: argparse.Namespace) -> dict[str, Any]:
    run_id = f"bench-teardown-{int(time.time())}-{index}"
    request = RunRequest(
        runtime_class="runc", variant="runc", replicas=args.replicas, image="bench",
        memory="16Mi", test_id="bench-teardown", run_id=run_id, settle_s=0,
    )  # fmt: skip
    display = Recorder()
    settings = stack.connection()

    async def baseline() -> int:
        await display.deleting.wait()
        return await poll_until_gone(stack.sim_url, run_id, args.poll_interval)

    async with Collector.connect(settings) as collector, Cluster.connect(settings) as cluster:
        async with asyncio.TaskGroup() as group:
            poller = group.create_task(baseline(), name="baseline-poller")
            outcome = await execute_run(request, collector, cluster, display)
    assert outcome.succeeded, outcome.message
    # The agents' gone events are committed within a batch interval: wait for the count.
    deadline = time.monotonic() + 30
    reference = 0
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"file:{stack.journal}?mode=ro", uri=True)
        (count,) = conn.execute(
            "SELECT COUNT(DISTINCT pod_uid) FROM events WHERE run_id = ? AND phase = ?",
            (run_id, events_pb2.PHASE_GONE),
        ).fetchone()
        conn.close()
        if count >= args.replicas:
            reference = last_gone_ns(stack.journal, run_id)
            break
        await asyncio.sleep(0.1)
    assert reference, "the agents' gone events never arrived"
    return {
        "run_id": run_id,
        "rtctl_wait_ms": (display.gone_ns - display.delete_started_ns) / 1e6,
        "poll_wait_ms": (poller.result() - display.delete_started_ns) / 1e6,
        "rtctl_minus_agents_gone_ms": (display.gone_ns - reference) / 1e6,
        "create_latency_ms": outcome.create_latency_ns / 1e6,
        "delete_latency_ms": outcome.delete_latency_ns / 1e6,
        "all_responded_ms": outcome.summary.all_responded_ns / 1e6,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="rtctl-teardown-"))
    settings = StackSettings(root=root, nodes=2, seed=11, pleg_period=0.1)
    async with LocalStack(settings, progress=lambda text: None) as stack:
        runs = [await one_run(stack, i, args) for i in range(args.runs)]
    keys = [k for k in runs[0] if k != "run_id"]
    result: dict[str, Any] = {
        "replicas": args.replicas,
        "poll_interval_s": args.poll_interval,
        "runs": runs,
        **{key: spread([r[key] for r in runs]) for key in keys},
    }
    ratios = [r["poll_wait_ms"] / r["rtctl_wait_ms"] for r in runs]
    result["ratio_poll_over_rtctl"] = spread(ratios)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    r, p, q = result["rtctl_wait_ms"], result["poll_wait_ms"], result["ratio_poll_over_rtctl"]
    a = result["rtctl_minus_agents_gone_ms"]
    print(
        f"rtctl_teardown: {args.runs} runs x {args.replicas} pods, delete -> all pods seen gone: "
        f"rtctl {r['median']:.0f} ms [{r['min']:.0f}..{r['max']:.0f}], "
        f"{args.poll_interval:g} s poller {p['median']:.0f} ms [{p['min']:.0f}..{p['max']:.0f}], "
        f"ratio {q['median']:.1f}x [{q['min']:.1f}..{q['max']:.1f}]; rtctl vs agents' last gone "
        f"{a['median']:+.1f} ms [{a['min']:+.1f}..{a['max']:+.1f}]; API latency create "
        f"{result['create_latency_ms']['median']:.1f} ms, delete "
        f"{result['delete_latency_ms']['median']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

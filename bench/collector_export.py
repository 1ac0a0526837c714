"""Benchmark of the collector's exporter: journal → InfluxDB throughput and latency.

Run: ``.venv/bin/python bench/collector_export.py`` (about 2 minutes). It starts
its own InfluxDB 1.x (``rtbench.influxd.LocalInfluxd``) on a free loopback port,
fills a journal through the real ``Journal`` API and measures, each repeated
(3 times by default) and reported as median and spread (min..max):

- throughput: journal rows exported into InfluxDB, points/s, for a batch-size
  sweep (``--batch-sizes``); each repetition writes into a fresh database;
- baselines in the same run, on the same lines: the same points posted as
  pre-rendered line protocol in 5000-line requests without any journal work
  (InfluxDB's ceiling here), one point per request (a naive writer), and the
  exporter into a sink that answers 204 at once (the exporter's own ceiling);
- latency: events committed to the journal at a steady rate (``--rate``, default
  2000/s, 100 per commit like an agent batch) while the exporter runs; for
  each event, the time from its commit returning to its point being counted
  by an InfluxQL query (polled back to back; the poll period is reported as
  the resolution). The agent→collector hop before the commit is not included:
  the ingest benchmark measures that;
- compute_summary for a run of ``--summary-pods`` pods against plainly
  fetching that run's event rows.

Writes bench/results/collector_export.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from collector.exporting import Exporter, InfluxTarget
from collector.journal import Journal
from collector.summaries import compute_summary
from rtbench.clock import wall_ns
from rtbench.influxd import LocalInfluxd
from rtbench.v1 import agent_pb2, control_pb2, events_pb2

# The exporter's default batch size, compared against the bulk baseline.
REFERENCE_SIZE = 5000
RESULTS = Path(__file__).resolve().parent / "results" / "collector_export.json"
MS = 1_000_000
PHASES = (
    events_pb2.PHASE_SCHEDULED,
    events_pb2.PHASE_CONTAINER_STARTED,
    events_pb2.PHASE_RUNNING,
    events_pb2.PHASE_FIRST_RESPONSE,
    events_pb2.PHASE_READY,
)


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank, as the run summaries use."""
    k = max(1, math.ceil(p * len(sorted_values) / 100))
    return sorted_values[min(k, len(sorted_values)) - 1]


# -- journals ------------------------------------------------------------------


def new_journal(path: Path, runs: Sequence[tuple[str, int]]) -> Journal:
    journal = Journal.open(path)
    for node in ("node-a", "node-b"):
        journal.upsert_agent(agent_pb2.Hello(agent_id=f"agent-{node}", node=node), wall_ns())
    for run_id, replicas in runs:
        spec = control_pb2.RunSpec(
            run_id=run_id, test_id="bench", runtime_class="runc", variant="16Mi", replicas=replicas
        )
        now = wall_ns()
        journal.register_run(spec, now)
        journal.record_create(run_id, now, now, now + MS, events_pb2.ClockOffset())
    return journal


def pod_rows(run_id: str, uid: str, node: str, start: int) -> agent_pb2.Batch:
    """The rows one pod start leaves: 5 events, 2 probe attempts, 1 memory sample."""
    ref = events_pb2.PodRef(uid=uid, namespace="bench", name=f"web-{uid}", node=node, run_id=run_id)
    b = agent_pb2.Batch()
    for k, phase in enumerate(PHASES):
        b.events.add(pod=ref, phase=phase, source=events_pb2.SOURCE_WATCH, time_ns=start + k * MS)
    b.probes.add(pod=ref, time_ns=start + 2 * MS, ok=False, error="connection refused")
    b.probes.add(pod=ref, time_ns=start + 3 * MS, ok=True, latency_ns=250_000, status_code=200)
    b.samples.add(pod=ref, time_ns=start + 9 * MS, pod_memory_bytes=3 << 20)
    return b


def fill_throughput_journal(path: Path, pods: int, per_run: int) -> tuple[Journal, int]:
    runs = [(f"run-{r}", per_run) for r in range(-(-pods // per_run))]
    journal = new_journal(path, runs)
    seq = {"agent-node-a": 0, "agent-node-b": 0}
    t0 = wall_ns() - 3600 * 10**9
    rows = 0
    items: list[tuple[str, agent_pb2.Batch]] = []
    for i in range(pods):
        node = "node-a" if i % 2 == 0 else "node-b"
        agent = f"agent-{node}"
        run_id, _ = runs[i // per_run]
        b = pod_rows(run_id, f"{run_id}-p{i}", node, t0 + i * 10 * MS)
        b.samples.add(
            time_ns=t0 + i * 10 * MS + 1, mem_total_bytes=8 << 30, mem_available_bytes=4 << 30
        )
        seq[agent] += 1
        b.sequence = seq[agent]
        items.append((agent, b))
        rows += len(b.events) + len(b.probes) + len(b.samples)
        if len(items) == 200:
            journal.commit_batches(items, wall_ns())
            items = []
    if items:
        journal.commit_batches(items, wall_ns())
    return journal, rows


# -- measurements ----------------------------------------------------------------


async def export_once(
    journal: Journal, url: str, database: str, batch_lines: int, rows: int
) -> float:
    """Seconds for a fresh exporter to ship every row (from cursor 0)."""
    journal.connection().execute("DELETE FROM export_cursors")
    exporter = Exporter(journal.path, InfluxTarget(url, database=database, batch_lines=batch_lines))
    start = time.perf_counter()
    task = asyncio.create_task(exporter.run(), name="exporter")
    try:
        while exporter.stats.points_written < rows:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        return time.perf_counter() - start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Sink:
    """Answers 204 to every write and keeps the bodies: the exporter's ceiling,
    and the exact lines for the baselines."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _write(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application(client_max_size=256 << 20)
        app.router.add_post("/write", self._write)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def bulk_post(url: str, database: str, lines: list[str], per_request: int) -> float:
    params = {"db": database, "precision": "ns"}
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for i in range(0, len(lines), per_request):
            body = "\n".join(lines[i : i + per_request]).encode()
            async with session.post(f"{url}/write", params=params, data=body) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"bulk write answered {resp.status}: {await resp.text()}")
    return time.perf_counter() - start


def naive_post(influx: LocalInfluxd, database: str, lines: list[str]) -> float:
    """One point per request over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", influx.http_port, timeout=30)
    path = "/write?" + urllib.parse.urlencode({"db": database, "precision": "ns"})
    start = time.perf_counter()
    for line in lines:
        conn.request("POST", path, body=line.encode())
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"naive write answered {resp.status}")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


async def latency_once(
    tmp: Path, influx: LocalInfluxd, rep: int, rate: int, seconds: float
) -> dict[str, float]:
    """Commit→visible latencies of events appended at ``rate``/s for ``seconds``."""
    journal = new_journal(tmp / f"latency-{rep}.sqlite", [("lat", 1_000_000)])
    database = f"latency_{rep}"
    influx.create_database(database)
    exporter = Exporter(journal.path, InfluxTarget(influx.url, database=database))
    per_commit = 100
    commits = int(rate * seconds / per_commit)
    committed: list[float] = []  # commit time of each event, in order
    visible: list[float] = []
    polls: list[float] = []
    query = {"db": database, "q": 'SELECT count("uid") FROM "pod_phase"'}

    def commit(seq: int) -> float:
        b = agent_pb2.Batch(sequence=seq)
        base = wall_ns()
        for k in range(per_commit):
            ref = events_pb2.PodRef(uid=f"u{seq}-{k}", name=f"web-{seq}-{k}", run_id="lat")
            b.events.add(pod=ref, phase=events_pb2.PHASE_READY, source=1, time_ns=base + k)
        journal.commit_batches([("agent-node-a", b)], wall_ns())
        return time.perf_counter()

    async def produce() -> None:
        next_at = time.perf_counter()
        for seq in range(1, commits + 1):
            done = await asyncio.to_thread(commit, seq)
            committed.extend([done] * per_commit)
            next_at += per_commit / rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def poll(session: aiohttp.ClientSession) -> None:
        total = commits * per_commit
        while len(visible) < total:
            started = time.perf_counter()
            async with session.get(f"{influx.url}/query", params=query) as resp:
                body = await resp.json()
            now = time.perf_counter()
            polls.append(now - started)
            series = body["results"][0].get("series")
            count = int(series[0]["values"][0][1]) if series else 0
            while len(visible) < count:
                visible.append(now)

    task = asyncio.create_task(exporter.run(), name="exporter")
    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(produce(), poll(session))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        journal.close()
    influx.query(f'DROP DATABASE "{database}"')
    lat = sorted(v - c for v, c in zip(visible, committed, strict=True))
    return {
        "events": float(len(lat)),
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": lat[-1] * 1e3,
        "poll_period_ms": statistics.mean(polls) * 1e3,
    }


def summary_timing(tmp: Path, pods: int, reps: int) -> dict[str, Any]:
    journal = new_journal(tmp / "summary.sqlite", [("big", pods)])
    t0 = wall_ns()
    items = []
    for i in range(pods):
        node = "node-a" if i % 2 == 0 else "node-b"
        b = pod_rows("big", f"big-p{i}", node, t0 + i * MS)
        b.sequence = i + 1
        items.append((f"agent-{node}", b))
    journal.commit_batches(items, wall_ns())
    conn = journal.connection()
    compute, plain = [], []
    for _ in range(reps):
        start = time.perf_counter()
        summary = compute_summary(conn, "big", include_pods=True)
        compute.append(time.perf_counter() - start)
        start = time.perf_counter()
        conn.execute("SELECT * FROM events WHERE run_id = ?", ("big",)).fetchall()
        plain.append(time.perf_counter() - start)
    assert len(summary.pods) == pods
    journal.close()
    return {
        "pods": pods,
        "compute_summary_s": spread(compute),
        "select_events_s": spread(plain),
        "ratio": statistics.median(compute) / statistics.median(plain),
    }


async def into_influx(
    influx: LocalInfluxd, name: str, write: Callable[[str], Awaitable[float]]
) -> float:
    """Runs one write into a fresh database and drops it again, so every run
    starts from the same empty InfluxDB; returns the seconds the write took."""
    influx.create_database(name)
    try:
        return await write(name)
    finally:
        influx.query(f'DROP DATABASE "{name}"')


async def measure(args: argparse.Namespace, tmp: Path, influx: LocalInfluxd) -> dict[str, Any]:
    journal, rows = fill_throughput_journal(tmp / "journal.sqlite", args.pods, args.per_run)
    sink = Sink()
    await sink.start()
    try:
        await export_once(journal, sink.url, "sink", 5000, rows)
        lines = [line for body in sink.bodies for line in body.decode().split("\n")]
        assert len(lines) == rows, (len(lines), rows)
        naive_lines = lines[: args.naive_points]
        sizes = list(args.batch_sizes)
        ref = str(REFERENCE_SIZE if REFERENCE_SIZE in sizes else sizes[-1])
        rates: dict[str, list[float]] = {str(size): [] for size in sizes}
        sink_rates, bulk, naive, ratios = [], [], [], []
        # Each repetition measures everything once, the sweep in a rotated
        # order, so that a busy moment of the machine or InfluxDB's background
        # work after a drop does not land on one batch size or one baseline.
        for rep in range(args.reps):
            sink_rates.append(rows / await export_once(journal, sink.url, "sink", 5000, rows))
            bulk.append(
                rows
                / await into_influx(
                    influx, f"bulk_{rep}", lambda db: bulk_post(influx.url, db, lines, 5000)
                )
            )
            took = await into_influx(
                influx,
                f"naive_{rep}",
                lambda db: asyncio.to_thread(naive_post, influx, db, naive_lines),
            )
            naive.append(len(naive_lines) / took)
            for size in sizes[rep % len(sizes) :] + sizes[: rep % len(sizes)]:

                async def export(db: str, size: int = size) -> float:
                    elapsed = await export_once(journal, influx.url, db, size, rows)
                    counted = influx.query('SELECT count("uid") FROM "pod_phase"', db=db)
                    assert counted[0]["series"][0]["values"][0][1] == args.pods * len(PHASES)
                    return elapsed

                rates[str(size)].append(rows / await into_influx(influx, f"e{size}_{rep}", export))
            ratios.append(
                rates[str(REFERENCE_SIZE)][-1] / bulk[-1] if REFERENCE_SIZE in sizes else 0
            )
    finally:
        await sink.stop()
        journal.close()
    return {
        "rows": rows,
        "reference_batch_lines": ref,
        "throughput_points_per_s": {size: spread(values) for size, values in rates.items()},
        "exporter_to_null_sink_points_per_s": spread(sink_rates),
        "baseline_bulk_5000_points_per_s": spread(bulk),
        "baseline_one_point_per_request_points_per_s": spread(naive),
        "ratio_exporter_vs_bulk_per_rep": spread(ratios),
        "latency": [
            await latency_once(tmp, influx, rep, args.rate, args.latency_seconds)
            for rep in range(args.reps)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10_000, help="pods in the throughput journal")
    parser.add_argument("--per-run", type=int, default=1000, help="pods per run")
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[500, 1000, 5000, 10000],
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--naive-points", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=2000, help="events/s in the latency test")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--summary-pods", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rtbench-bench-export-") as tmpdir:
        tmp = Path(tmpdir)
        with LocalInfluxd(root=tmp / "influxd") as influx:
            result = asyncio.run(measure(args, tmp, influx))
        result["summary"] = summary_timing(tmp, args.summary_pods, args.reps)

    best_size = result["reference_batch_lines"]
    exporter = result["throughput_points_per_s"][best_size]["median"]
    naive = result["baseline_one_point_per_request_points_per_s"]["median"]
    lat = result["latency"]
    result.update(
        {
            "benchmark": "collector_export",
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            # Paired per repetition (same machine state), then the median.
            "ratio_exporter_vs_bulk": result["ratio_exporter_vs_bulk_per_rep"]["median"],
            "ratio_exporter_vs_one_point_per_request": exporter / naive,
            "latency_p99_ms": spread([r["p99_ms"] for r in lat]),
            "latency_p50_ms": spread([r["p50_ms"] for r in lat]),
            "latency_max_ms": spread([r["max_ms"] for r in lat]),
            "duration_s": time.perf_counter() - started,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sweep = " ".join(
        f"{size}:{v['median']:.0f}" for size, v in result["throughput_points_per_s"].items()
    )
    p99 = result["latency_p99_ms"]
    print(
        f"collector_export: {exporter:.0f} points/s at {best_size} lines/batch "
        f"(sweep {sweep}; {result['ratio_exporter_vs_bulk']:.2f}x raw bulk, "
        f"{result['ratio_exporter_vs_one_point_per_request']:.1f}x one-point-per-request); "
        f"commit->visible p99 {p99['median']:.0f} ms [{p99['min']:.0f}..{p99['max']:.0f}] "
        f"at {args.rate} events/s; summary of {args.summary_pods} pods "
        f"{result['summary']['compute_summary_s']['median'] * 1e3:.0f} ms "
        f"({result['summary']['ratio']:.1f}x a plain SELECT); -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

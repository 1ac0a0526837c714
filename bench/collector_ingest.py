"""Benchmark of the collector's ingest: events/s journaled and acknowledged, and per CPU second.

Run: ``.venv/bin/python bench/collector_ingest.py`` (about 2 minutes). For each
batch size of the sweep (``--batch-sizes``, default 50,200,1000,5000 events per
batch) and each repetition (``--reps``, default 3) it starts a fresh
``collector serve`` process (journal only, exporter off, fresh journal) and a
client in a separate OS process, so the collector's core is its own. The client
pre-builds and pre-serialises ``--events`` events (default 200 000) into
batches, connects as one agent and sends them as fast as acknowledgements allow
(a window of at most 64 batches / 100 000 events in flight); the time runs from
the first batch sent to the last ack received. Measured:

- events/s journaled and acked (wall clock of the client);
- the collector process's CPU seconds over the same span (user + system, all
  threads, from /proc), hence events per collector CPU second ("per core");
- the baseline in the same run, on the same machine and events: one bare SQLite
  WAL table (synchronous=FULL like the journal, no indexes), one ``executemany``
  of pre-built row tuples plus a commit per batch. The ratio collector/baseline
  is what gRPC, validation, protobuf-to-row conversion, pods, batches and the
  acks cost over raw SQLite.

Median and spread (min..max) per size. Writes bench/results/collector_ingest.json
and prints one summary line. The machine may be shared: the spread says how much.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from procstats import cpu_seconds

from rtbench.influxd import free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "collector_ingest.json"
BIN = Path(sys.executable).parent
T0 = 1_750_000_000_000_000_000


def build_batches(total: int, size: int) -> list[Any]:
    """Agent-like batches: events of 100 pods of one run, eight phases, one attribute in eight."""
    from rtbench.v1 import agent_pb2, events_pb2

    batches = []
    for seq in range(1, total // size + 1):
        batch = agent_pb2.Batch(sequence=seq, sealed_ns=T0 + seq * 10**6)
        batch.clock.offset_ns = -1500
        batch.clock.uncertainty_ns = 250_000
        batch.clock.samples = 8
        for i in range(size):
            k = (seq * size + i) % 100
            ev = batch.events.add()
            ev.pod.uid = f"7c5e0c9a-1f3b-4d2e-9a4b-{k:012d}"
            ev.pod.name = f"http-server-7d9f8b6c5-{k:05d}"
            ev.pod.namespace = "rtbench"
            ev.pod.run_id = "run-bench"
            ev.phase = events_pb2.PHASE_SCHEDULED + i % 8  # type: ignore[assignment]
            ev.source = events_pb2.SOURCE_WATCH
            ev.time_ns = T0 + seq * 10**6 + i
            ev.monotonic_ns = seq * 10**6 + i
            ev.uncertainty_ns = 1000
            if i % 8 == 0:
                ev.attributes["pod_ip"] = f"10.42.0.{k}"
        batches.append(batch)
    return batches


# -- the client process --------------------------------------------------------


async def _client(target: str, total: int, size: int) -> dict[str, Any]:
    import grpc

    from rtbench.v1 import agent_pb2

    window = max(2, min(64, 100_000 // size))
    payloads = [
        agent_pb2.AgentMessage(batch=b).SerializeToString() for b in build_batches(total, size)
    ]
    hello = agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="bench", node="node-1"))
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 * 2**20)]
    ) as channel:
        call = channel.stream_stream(
            "/rtbench.v1.AgentService/Connect",
            request_serializer=None,
            response_deserializer=agent_pb2.CollectorMessage.FromString,
        )()
        await call.write(hello.SerializeToString())
        await call.read()  # Welcome
        acked = 0
        free = asyncio.Semaphore(window)
        done = asyncio.Event()

        async def read_acks() -> None:
            nonlocal acked
            while acked < len(payloads):
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    raise RuntimeError(f"stream ended: {await call.code()} {await call.details()}")
                acked += 1
                free.release()
            done.set()

        started = time.perf_counter()
        reader = asyncio.create_task(read_acks())
        for payload in payloads:
            await free.acquire()
            await call.write(payload)
        await reader
        elapsed = time.perf_counter() - started
        await call.done_writing()
    return {"events": len(payloads) * size, "batches": len(payloads), "elapsed_s": elapsed}


def client_main(target: str, total: int, size: int) -> None:
    print(json.dumps(asyncio.run(_client(target, total, size))), flush=True)


# -- the parent ------------------------------------------------------------------


def one_run(tmp: Path, total: int, size: int, rep: int) -> dict[str, Any]:
    port = free_port()
    journal = tmp / f"journal-{size}-{rep}.sqlite"
    collector = subprocess.Popen(
        [str(BIN / "collector"), "serve", "--listen", f"127.0.0.1:{port}",
         "--journal", str(journal), "--stats-interval", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert collector.stdout is not None
        ready = collector.stdout.readline()
        if not ready.startswith("collector ready"):
            raise RuntimeError(f"collector did not start: {ready} {collector.stderr}")
        cpu_before = cpu_seconds(collector.pid)
        client = subprocess.run(
            [sys.executable, __file__, "--client", f"127.0.0.1:{port}", str(total), str(size)],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        cpu = cpu_seconds(collector.pid) - cpu_before
        result: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
    finally:
        collector.terminate()
        collector.wait(60)
    conn = sqlite3.connect(journal)
    stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    if stored != result["events"]:
        raise RuntimeError(f"journal holds {stored} events, client sent {result['events']}")
    result["events_per_s"] = result["events"] / result["elapsed_s"]
    result["collector_cpu_s"] = cpu
    result["events_per_cpu_s"] = result["events"] / cpu if cpu > 0 else float("inf")
    return result


def baseline(tmp: Path, total: int, size: int, rep: int) -> float:
    """events/s: pre-built rows, one executemany + commit per batch, bare WAL table."""
    rows_per_batch = []
    for batch in build_batches(total, size):
        rows_per_batch.append(
            [
                (
                    "bench",
                    batch.sequence,
                    ev.pod.run_id,
                    ev.pod.uid,
                    ev.pod.namespace,
                    ev.pod.name,
                    "node-1",
                    ev.phase,
                    ev.source,
                    ev.time_ns,
                    ev.time_ns + batch.clock.offset_ns,
                    ev.monotonic_ns,
                    ev.uncertainty_ns,
                )
                for ev in batch.events
            ]
        )
    path = tmp / f"baseline-{size}-{rep}.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE events(id INTEGER PRIMARY KEY, agent_id TEXT, sequence INTEGER,"
        " run_id TEXT, pod_uid TEXT, namespace TEXT, name TEXT, node TEXT, phase INTEGER,"
        " source INTEGER, time_ns INTEGER, corrected_ns INTEGER, monotonic_ns INTEGER,"
        " uncertainty_ns INTEGER)"
    )
    insert = (
        "INSERT INTO events(agent_id, sequence, run_id, pod_uid, namespace, name, node, phase,"
        " source, time_ns, corrected_ns, monotonic_ns, uncertainty_ns)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    started = time.perf_counter()
    for rows in rows_per_batch:
        conn.execute("BEGIN")
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return total // size * size / elapsed


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": list(values)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[50, 200, 1000, 5000],
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sizes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rtbench-bench-ingest-") as tmpdir:
        tmp = Path(tmpdir)
        for size in args.batch_sizes:
            runs, bases = [], []
            for rep in range(args.reps):
                runs.append(one_run(tmp, args.events, size, rep))
                bases.append(baseline(tmp, args.events, size, rep))
            eps = [r["events_per_s"] for r in runs]
            sizes[str(size)] = {
                "events_per_s": spread(eps),
                "events_per_cpu_s": spread([r["events_per_cpu_s"] for r in runs]),
                "collector_cpu_s": spread([r["collector_cpu_s"] for r in runs]),
                "baseline_sqlite_events_per_s": spread(bases),
                # Paired per repetition (same machine state), then the median.
                "ratio_vs_baseline": spread([e / b for e, b in zip(eps, bases, strict=True)]),
            }
    result = {
        "benchmark": "collector_ingest",
        "settings": {"batch_sizes": args.batch_sizes, "events": args.events, "reps": args.reps},
        "cpu_count": os.cpu_count(),
        "sizes": sizes,
        "target_events_per_cpu_s": 50_000,
        "duration_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sweep = "; ".join(
        f"{size}/batch {v['events_per_s']['median'] / 1e3:.0f}k/s "
        f"[{v['events_per_s']['min'] / 1e3:.0f}..{v['events_per_s']['max'] / 1e3:.0f}k] "
        f"{v['events_per_cpu_s']['median'] / 1e3:.0f}k/cpu-s "
        f"x{v['ratio_vs_baseline']['median']:.2f} of raw SQLite"
        for size, v in sizes.items()
    )
    print(f"collector_ingest: events journaled+acked, median of {args.reps}: {sweep} -> {args.out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        client_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(main())

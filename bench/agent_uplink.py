"""Benchmark of the agent's uplink: what durability and batching cost over a bare stream.

Run: ``.venv/bin/python bench/agent_uplink.py`` (well under a minute). A minimal
acking AgentService runs in a child process (so the two sides do not share a
core); this process is the agent. Measured per run:

- burst: ``--records`` events handed to the real batcher as fast as the loop
  allows, sealed into the real on-disk spool (temp file, fsync, rename, fsync
  of the directory, per batch), sent over the real uplink and acknowledged;
  records/s from the first put to the last ack, and agent CPU µs per record;
- baseline, in the same run: the same number of events, pre-built into batches
  of the same size, written straight to a bare ``Connect`` stream with the same
  window, acks awaited the same way; no batcher, no spool, no clock sync. The
  ratio agent/baseline is what batching plus durability cost;
- trickle: ``--trickle-rate`` events per second for ``--trickle-seconds``
  through the uplink; each record's age when its batch is acknowledged
  (p50/p99/max), i.e. what the flush interval plus the spool write plus the
  round trip delay a record.

Repeated ``--runs`` times (3 by default), reported as median and spread
(min..max). Writes bench/results/agent_uplink.json and prints one summary line.
``--serve PORT`` is the child (collector) mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from agent.batching import Batcher
from agent.clocksync import ClockSync
from agent.security import ChannelSecurity
from agent.sending import Uplink
from agent.settings import UplinkSettings
from agent.spool import Spool
from rtbench.clock import mono_ns, wall_ns
from rtbench.influxd import free_port
from rtbench.v1 import agent_pb2, agent_pb2_grpc, events_pb2

RESULTS = Path(__file__).resolve().parent / "results" / "agent_uplink.json"
BATCH = 500
WINDOW = 64


# -- the collector child --------------------------------------------------------------


class _AckingCollector(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    async def Connect(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
        first = await context.read()
        assert first.WhichOneof("body") == "hello"
        await context.write(agent_pb2.CollectorMessage(welcome=agent_pb2.Welcome(collector_id="b")))
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            t2 = wall_ns()
            if message.WhichOneof("body") == "batch":
                ack = agent_pb2.Ack(sequence=message.batch.sequence)
                await context.write(agent_pb2.CollectorMessage(ack=ack))
            elif message.WhichOneof("body") == "clock_sync":
                request = message.clock_sync
                reply = events_pb2.ClockSyncReply(
                    id=request.id, t1_ns=request.t1_ns, t2_ns=t2, t3_ns=wall_ns()
                )
                await context.write(agent_pb2.CollectorMessage(clock_sync=reply))


async def serve(port: int) -> None:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(_AckingCollector(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


# -- the agent side ---------------------------------------------------------------------


def event(i: int) -> events_pb2.Event:
    return events_pb2.Event(
        pod=events_pb2.PodRef(uid=f"uid-{i:08d}", namespace="bench", name=f"pod-{i}", node="n1"),
        phase=events_pb2.PHASE_RUNNING,
        source=events_pb2.SOURCE_WATCH,
        time_ns=wall_ns(),
        monotonic_ns=mono_ns(),
    )


class _TimedSpool(Spool):
    """Records, at each ack, how old the batch's events are."""

    ages_ns: list[int] = []

    async def ack(self, seq: int) -> bool:
        batch = self._memory.get(seq)
        now = wall_ns()
        if batch is not None:
            self.ages_ns.extend(now - e.time_ns for e in batch.events)
        return await super().ack(seq)


async def through_uplink(
    address: str, state: Path, events: list[events_pb2.Event], rate: float | None
) -> dict[str, float]:
    records = len(events)
    settings = UplinkSettings(collector=address, state_dir=state, batch_max_events=BATCH)
    spool = _TimedSpool.open(state / "spool", max_bytes=2**30, memory_batches=100_000)
    spool.ages_ns = []
    clock = ClockSync()
    batcher = Batcher(spool, clock, max_records=BATCH, flush_interval_s=settings.flush_interval_s)
    uplink = Uplink(
        settings,
        agent_id="bench",
        node="n1",
        spool=spool,
        clock=clock,
        security=ChannelSecurity.load(settings),
    )
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(batcher.run()), group.create_task(uplink.run())]
        while not uplink.connected:  # noqa: ASYNC110 - bench start-up
            await asyncio.sleep(0.01)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for i, one in enumerate(events):
            if rate is not None:
                one.time_ns = wall_ns()  # its age is measured from the hand-over
            batcher.put_event(one)
            if rate is not None:
                await asyncio.sleep(1.0 / rate)
            elif i % 1000 == 999:
                await asyncio.sleep(0)
        while batcher.sealed_records < records or spool.unacked:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        for task in tasks:
            task.cancel()
    ages = sorted(spool.ages_ns)
    return {
        "records_per_s": records / elapsed,
        "cpu_us_per_record": cpu / records * 1e6,
        "age_p50_ms": ages[len(ages) // 2] / 1e6,
        "age_p99_ms": ages[min(len(ages) - 1, int(len(ages) * 0.99))] / 1e6,
        "age_max_ms": ages[-1] / 1e6,
    }


async def bare_stream(address: str, events: list[events_pb2.Event]) -> dict[str, float]:
    records = len(events)
    batches = [
        agent_pb2.Batch(sequence=n + 1, events=events[start : start + BATCH])
        for n, start in enumerate(range(0, records, BATCH))
    ]
    async with grpc.aio.insecure_channel(address) as channel:
        call: Any = agent_pb2_grpc.AgentServiceStub(channel).Connect()
        await call.write(agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="base")))
        await call.read()
        acked = 0
        window = asyncio.Semaphore(WINDOW)

        async def receive() -> None:
            nonlocal acked
            while acked < len(batches):
                await call.read()
                acked += 1
                window.release()

        cpu0, t0 = time.process_time(), time.perf_counter()
        reader = asyncio.create_task(receive())
        for batch in batches:
            await window.acquire()
            await call.write(agent_pb2.AgentMessage(batch=batch))
        await reader
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        call.cancel()
    return {"records_per_s": records / elapsed, "cpu_us_per_record": cpu / records * 1e6}


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None and (await child.stdout.readline()).strip() == b"ready"
        address = f"127.0.0.1:{port}"
        runs: list[dict[str, Any]] = []
        # Built once, outside every timed section: both paths get the same records.
        burst_events = [event(i) for i in range(args.records)]
        trickle_events = [event(i) for i in range(int(args.trickle_rate * args.trickle_seconds))]
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(dir=args.spool_dir) as tmp:
                burst = await through_uplink(address, Path(tmp) / "burst", burst_events, None)
                trickle = await through_uplink(
                    address, Path(tmp) / "trickle", trickle_events, args.trickle_rate
                )
            base = await bare_stream(address, burst_events)
            runs.append({"uplink": burst, "baseline": base, "trickle": trickle})
    finally:
        child.terminate()
        await child.wait()
    ratio = [r["uplink"]["records_per_s"] / r["baseline"]["records_per_s"] for r in runs]
    return {
        "records": args.records,
        "batch_max_events": BATCH,
        "window": WINDOW,
        "trickle_rate": args.trickle_rate,
        "runs": runs,
        "summary": {
            "uplink_records_per_s": spread([r["uplink"]["records_per_s"] for r in runs]),
            "baseline_records_per_s": spread([r["baseline"]["records_per_s"] for r in runs]),
            "throughput_ratio": spread(ratio),
            "uplink_cpu_us_per_record": spread([r["uplink"]["cpu_us_per_record"] for r in runs]),
            "baseline_cpu_us_per_record": spread(
                [r["baseline"]["cpu_us_per_record"] for r in runs]
            ),
            "trickle_age_p50_ms": spread([r["trickle"]["age_p50_ms"] for r in runs]),
            "trickle_age_p99_ms": spread([r["trickle"]["age_p99_ms"] for r in runs]),
            "trickle_age_max_ms": spread([r["trickle"]["age_max_ms"] for r in runs]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trickle-rate", type=float, default=200.0)
    parser.add_argument("--trickle-seconds", type=float, default=3.0)
    parser.add_argument("--spool-dir", default=None, help="where the spools go (default: /tmp)")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return
    result = asyncio.run(bench(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(
        f"agent_uplink: {s['uplink_records_per_s']['median']:,.0f} records/s through batcher, "
        f"fsynced spool and stream vs {s['baseline_records_per_s']['median']:,.0f} on a bare "
        f"stream (ratio {s['throughput_ratio']['median']:.2f}, "
        f"{s['throughput_ratio']['min']:.2f}..{s['throughput_ratio']['max']:.2f}); "
        f"CPU {s['uplink_cpu_us_per_record']['median']:.1f} vs "
        f"{s['baseline_cpu_us_per_record']['median']:.1f} µs/record; trickle at "
        f"{result['trickle_rate']:.0f}/s: record age at ack p50 "
        f"{s['trickle_age_p50_ms']['median']:.0f} ms, "
        f"p99 {s['trickle_age_p99_ms']['median']:.0f} ms"
    )


if __name__ == "__main__":
    main()

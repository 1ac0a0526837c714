"""Benchmark of the agent's observers: probe accuracy and agent cost in a 100-pod burst.

Run: ``.venv/bin/python bench/agent_probe.py`` (about 4 minutes with the
defaults). Each run starts a simulated cluster with 2 nodes in this process
(runc profile, the real workload, a containerd socket per node), one agent
process per node running the real ``NodeObserver`` (watch, prober, sampler,
containerd reader with its CRI address lookups; default settings) into a
``RecordingOutbox``, and one baseline process, then creates a Deployment of
``--pods`` replicas at once and waits until every workload listens.

Setups (``--setup``, repeatable; all three by default, reported side by side):

- ``default``: the simulated kubelet publishes status on its default 1 s relist,
  like a real kubelet's PLEG, and the agent reads the node's containerd socket
  (events, and CRI for each sandbox's IP). This is what a user gets.
- ``instant-status``: the same with ``--pleg-period 0``: the kubelet publishes
  the pod IP the moment the sandbox starts, a timing no real node has; it
  isolates the prober from the status lag.
- ``no-cri``: the default 1 s relist with the agent's containerd reader off, so
  the prober learns each pod's address only from the API's podIP, as it did
  before it asked CRI (and as it still does on a node without containerd).

Measured per run:

- accuracy: for every pod, first_response (the bracket's midpoint) minus the
  listen time the workload logged itself (``epoch_ms=``, µs digits): p50 / p99 /
  max of the absolute error; the same for the bracket's end (the first success
  itself); the width of the probe bracket (twice the event's uncertainty); and
  how many events fall within the reports' default 10 ms uncertainty bound;
- the baseline, over the same pods in the same run: a poller that, like
  Prometheus scraping the blackbox exporter every 0.5 s, probes each pod it
  knows (targets found by a plain list every 50 ms, quicker than Prometheus'
  own service discovery) at a fixed per-target phase every 500 ms, and takes
  the first successful scrape's start as the first response. The error ratio
  is baseline / agent, at p50 and at p99;
- agent cost: CPU seconds (user + system) of each agent process from the
  Deployment's creation to that agent's last first_response, as % of one core
  (the larger of the two agents), and peak RSS (VmHWM, the larger of the two);
- context: how late a 10 ms sleep woke in the agent (loop lag p99: the machine's
  load shows here), where the probed addresses came from, and how each
  bracket's start was bounded.

Repeated ``--runs`` times per setup (3 by default), reported as median and
spread (min..max). Writes bench/results/agent_probe.json and prints one summary
line per setup. ``--agent NODE`` and ``--poller`` are the child processes' modes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from procstats import status_kb

from agent.observing import NodeObserver, ObserveSettings
from agent.outbox import RecordingOutbox
from rtbench.clock import wall_ns
from rtbench.v1 import events_pb2
from simcluster.cluster import SimCluster

SCRIPT = Path(__file__).resolve()
RESULTS = SCRIPT.parent / "results" / "agent_probe.json"
NODES = ("sim-node-1", "sim-node-2")
SCRAPE_INTERVAL_S = 0.5
BOUND_MS = 10.0
"""The reports' default uncertainty bound for first_response (10 ms)."""
SETUPS: dict[str, dict[str, Any]] = {
    "default": {"pleg_period": 1.0, "containerd": True},
    "instant-status": {"pleg_period": 0.0, "containerd": True},
    "no-cri": {"pleg_period": 1.0, "containerd": False},
}
"""Name -> the simulated kubelet's relist period and whether the agents read containerd."""
LISTENING = re.compile(r"epoch_ms=(\d+)\.(\d{3})")
MS = 1e6
Result = dict[str, Any]


# -- child processes ------------------------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


async def agent_main(node: str, kubeconfig: str, overrides: dict[str, Any]) -> Result:
    """One node's observers until SIGTERM; what they saw and what they cost."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    outbox = RecordingOutbox()
    cpu: list[tuple[int, float]] = []
    lags: list[float] = []

    async def meter() -> None:
        # CPU time every 50 ms, and how late a 10 ms sleep wakes (stalls of the agent's
        # loop or of the process); sparse enough to cost the agent nothing visible.
        next_cpu = 0.0
        while True:
            now = loop.time()
            if now >= next_cpu:
                cpu.append((wall_ns(), time.process_time()))
                next_cpu = now + 0.05
            await asyncio.sleep(0.01)
            lags.append((loop.time() - now - 0.01) * 1000)

    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    async with k8s.ApiClient(configuration) as api:
        observer = NodeObserver(api, outbox, ObserveSettings(node=node, **overrides))
        tasks = [
            loop.create_task(observer.run(), name="observer"),
            loop.create_task(meter(), name="meter"),
        ]
        await _until(lambda: observer.watcher.watches > 0)
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    phases: dict[str, int] = {}
    for event in outbox.events:
        name = events_pb2.Phase.Name(event.phase)
        phases[name] = phases.get(name, 0) + 1
    return {
        "node": node,
        "responses": [
            {
                "uid": e.pod.uid,
                "name": e.pod.name,
                "time_ns": e.time_ns,
                "start_ns": int(e.attributes["bracket_start_ns"]),
                "end_ns": int(e.attributes["bracket_end_ns"]),
                "source": e.attributes["bracket_start_source"],
                "address_source": e.attributes.get("address_source", ""),
                "attempts": int(e.attributes["attempts"]),
                "probe_started_ns": int(e.attributes["probe_started_ns"]),
            }
            for e in outbox.events
            if e.phase == events_pb2.PHASE_FIRST_RESPONSE
        ],
        "attempts": observer.prober.attempts,
        "phases": phases,
        "samples": len(outbox.samples),
        "cpu": cpu,
        "vm_hwm_kib": status_kb("self", "VmHWM"),
        "loop_lag_ms": {"p99": percentile(lags, 0.99), "max": max(lags, default=0.0)},
        "involuntary_switches": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw,
    }


async def _scrape(ip: str, port: int) -> bool:
    """One blackbox-style HTTP probe: GET / answered 2xx within the timeout."""
    try:
        async with asyncio.timeout(SCRAPE_INTERVAL_S * 0.8):
            reader, writer = await asyncio.open_connection(ip, port)
            try:
                writer.write(f"GET / HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
                line = await reader.readline()
            finally:
                writer.close()
        parts = line.split()
        return len(parts) >= 2 and parts[1].startswith(b"2")
    except (OSError, TimeoutError):
        return False


async def poller_main(server: str) -> Result:
    """The baseline: every known pod scraped every 500 ms at its own fixed phase."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    first: dict[str, Result] = {}
    probing: dict[str, asyncio.Task[None]] = {}
    interval_ns = int(SCRAPE_INTERVAL_S * 1e9)

    async def scrape_loop(uid: str, name: str, ip: str, port: int, known_ns: int) -> None:
        # Prometheus spreads targets over the interval by a hash of the target.
        phase = zlib.crc32(f"{ip}:{port}".encode()) % interval_ns
        last_failure = known_ns
        slot = ((known_ns - phase) // interval_ns + 1) * interval_ns + phase
        while True:
            await asyncio.sleep(max(0.0, (slot - wall_ns()) / 1e9))
            started = wall_ns()
            if await _scrape(ip, port):
                first[uid] = {
                    "uid": uid,
                    "name": name,
                    "time_ns": started,
                    "start_ns": last_failure,
                }
                return
            last_failure = started
            slot += interval_ns

    async with aiohttp.ClientSession() as http:
        print("ready", flush=True)
        url = f"{server}/api/v1/pods?labelSelector=app%3Dc-http-server"
        while not stop.is_set():
            async with http.get(url) as response:
                listed = json.loads(await response.read())
            now = wall_ns()
            for pod in listed["items"]:
                uid, ip = pod["metadata"]["uid"], (pod.get("status") or {}).get("podIP")
                if ip and uid not in probing:
                    probing[uid] = loop.create_task(
                        scrape_loop(uid, pod["metadata"]["name"], ip, 8080, now), name=uid
                    )
            try:
                async with asyncio.timeout(0.05):
                    await stop.wait()
            except TimeoutError:
                pass
        for task in probing.values():
            task.cancel()
        await asyncio.gather(*probing.values(), return_exceptions=True)
    return {"responses": list(first.values())}


# -- the driver ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "max": max(values, default=float("nan")),
    }


def accuracy(responses: list[Result], listened: dict[str, int]) -> Result:
    mine = [r for r in responses if r["uid"] in listened]
    # time_ns is what each reports as first_response (the agent: its bracket's
    # midpoint); end_ns the first success itself (the poller has only that).
    errors = [abs(r["time_ns"] - listened[r["uid"]]) / MS for r in mine]
    end_errors = [abs(r.get("end_ns", r["time_ns"]) - listened[r["uid"]]) / MS for r in mine]
    widths = [(r.get("end_ns", r["time_ns"]) - r["start_ns"]) / MS for r in mine]
    within = sum(1 for w in widths if w / 2 <= BOUND_MS)
    # Strict: the workload's clock reading after listen() may trail the real listen.
    inside = sum(
        1
        for r in mine
        if r["start_ns"] - 1000 <= listened[r["uid"]] <= r.get("end_ns", r["time_ns"])
    )
    late = [(listened[r["uid"]] - r.get("end_ns", r["time_ns"])) / MS for r in mine]
    return {
        "pods": len(mine),
        "error_ms": _stats(errors),
        "first_success_error_ms": _stats(end_errors),
        "width_ms": _stats(widths),
        "within_bound": within,
        "listen_inside_bracket": inside,
        "listen_after_bracket_max_ms": max([0.0, *late]),
    }


def cpu_percent(samples: list[list[float]], start_ns: int, end_ns: int) -> float:
    """CPU of one core used between two wall times, from (wall_ns, cpu_s) samples."""
    before = [s for s in samples if s[0] <= start_ns] or samples[:1]
    after = [s for s in samples if s[0] >= end_ns] or samples[-1:]
    t0, c0 = before[-1]
    t1, c1 = after[0]
    return 100.0 * (c1 - c0) / max(1e-9, (t1 - t0) / 1e9)


def _tail(path: Path) -> str:
    return path.read_text()[-2000:]


async def _child(args: list[str], log: Path) -> asyncio.subprocess.Process:
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        line = await process.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"{args[0]} did not start: {_tail(log)}")
    return process


def deployment(pods: int, run_id: str) -> Result:
    labels = {"app": "c-http-server", "rtbench.io/run-id": run_id}
    container = {"name": "web", "image": "rtbench/workload:1", "ports": [{"containerPort": 8080}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "burst"},
        "spec": {
            "replicas": pods,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


async def burst(sim: SimCluster, pods: int, run_id: str) -> tuple[int, dict[str, int]]:
    """Create the Deployment; its creation time and each pod's logged listen time."""
    async with aiohttp.ClientSession() as http:
        created_ns = wall_ns()
        url = f"{sim.url}/apis/apps/v1/namespaces/default/deployments"
        async with http.post(url, json=deployment(pods, run_id)) as response:
            assert response.status == 201, await response.text()
        # Wait in-process (cheap) until every workload runs, then read the logs once:
        # polling logs during the burst would load the machine the agents share.
        async with asyncio.timeout(120):
            await _until(lambda: len(sim.processes()) >= pods)
        await asyncio.sleep(0.2)  # a process spawned just now still has to listen
        listened: dict[str, int] = {}
        for pod in sim.store.items("Pod"):
            md = pod["metadata"]
            url = f"{sim.url}/api/v1/namespaces/default/pods/{md['name']}/log"
            async with http.get(url) as response:
                match = LISTENING.search(await response.text())
            assert match, f"{md['name']} logged no listen time"
            listened[md["uid"]] = int(match[1]) * 1_000_000 + int(match[2]) * 1000
    await asyncio.sleep(2 * SCRAPE_INTERVAL_S + 0.5)  # the slowest scrape comes round
    return created_ns, listened


async def one_run(index: int, setup: str, args: argparse.Namespace, run_dir: Path) -> Result:
    overrides = {k: v for k, v in vars(args).items() if k.startswith("probe_") and v}
    wanted = SETUPS[setup]
    sockets = run_dir / "ctd"  # /tmp/rtbench-agent-probe-*/...: within the 107-byte limit
    async with SimCluster(
        nodes=2,
        pleg_period=wanted["pleg_period"],
        seed=index + 1,
        state_dir=run_dir / "sim",
        containerd_dir=sockets if wanted["containerd"] else None,
    ) as sim:
        kubeconfig = str(sim.write_kubeconfig(run_dir / "kubeconfig"))
        children = {}
        for node in NODES:
            out = str(run_dir / f"{node}.json")
            flags = ["--agent", node, "--kubeconfig", kubeconfig, "--out", out]
            socket = str(sim.containerd_socket(node)) if wanted["containerd"] else "off"
            settings = json.dumps({**overrides, "containerd_socket": socket})
            children[node] = await _child([*flags, "--settings", settings], run_dir / f"{node}.log")
        out = str(run_dir / "poller.json")
        flags = ["--poller", "--server", sim.url, "--out", out]
        children["poller"] = await _child(flags, run_dir / "poller.log")
        created_ns, listened = await burst(sim, args.pods, f"bench-{index}")
        for process in children.values():
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            for process in children.values():
                await process.wait()
    return {"created_ns": created_ns, "listened": listened}


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def evaluate(index: int, run: Result, run_dir: Path) -> Result:
    created_ns, listened = run["created_ns"], run["listened"]
    agents = {node: json.loads((run_dir / f"{node}.json").read_text()) for node in NODES}
    poller = json.loads((run_dir / "poller.json").read_text())
    responses = [r for a in agents.values() for r in a["responses"]]

    def last(a: Result) -> int:
        return int(max((r["time_ns"] for r in a["responses"]), default=created_ns))

    result: Result = {
        "run": index,
        "listen_after_create_s": {
            "first": (min(listened.values()) - created_ns) / 1e9,
            "last": (max(listened.values()) - created_ns) / 1e9,
        },
        "agent": accuracy(responses, listened),
        "baseline": accuracy(poller["responses"], listened),
        "agent_attempts": {n: a["attempts"] for n, a in agents.items()},
        "agent_bracket_starts": _count(r["source"] for r in responses),
        "agent_address_sources": _count(r["address_source"] for r in responses),
        "agent_cpu_percent_burst": {
            n: cpu_percent(a["cpu"], created_ns, last(a)) for n, a in agents.items()
        },
        "agent_cpu_s_total": {n: a["cpu"][-1][1] - a["cpu"][0][1] for n, a in agents.items()},
        "agent_peak_rss_mb": {n: a["vm_hwm_kib"] / 1024 for n, a in agents.items()},
        "burst_s": {n: (last(a) - created_ns) / 1e9 for n, a in agents.items()},
        "agent_events": {n: a["phases"] for n, a in agents.items()},
        "agent_loop_lag_ms": {n: a["loop_lag_ms"] for n, a in agents.items()},
        "agent_involuntary_switches": {n: a["involuntary_switches"] for n, a in agents.items()},
        "agent_pods": [
            {
                "name": r["name"],
                "probing_ms": round((r["time_ns"] - r["probe_started_ns"]) / MS, 3),
                "attempts": r["attempts"],
                "width_ms": round((r["end_ns"] - r["start_ns"]) / MS, 3),
                "error_ms": round((r["time_ns"] - listened[r["uid"]]) / MS, 3),
            }
            for r in sorted(responses, key=lambda r: r["time_ns"])
            if r["uid"] in listened
        ],
    }
    a, b = result["agent"]["error_ms"], result["baseline"]["error_ms"]
    result["error_ratio"] = {"p50": b["p50"] / a["p50"], "p99": b["p99"] / a["p99"]}
    return result


SUMMARY: dict[str, Callable[[Result], float]] = {
    "agent_error_p50_ms": lambda r: r["agent"]["error_ms"]["p50"],
    "agent_error_p99_ms": lambda r: r["agent"]["error_ms"]["p99"],
    "agent_error_max_ms": lambda r: r["agent"]["error_ms"]["max"],
    "agent_first_success_error_p99_ms": lambda r: r["agent"]["first_success_error_ms"]["p99"],
    "agent_width_p50_ms": lambda r: r["agent"]["width_ms"]["p50"],
    "agent_width_p99_ms": lambda r: r["agent"]["width_ms"]["p99"],
    "agent_within_bound_percent": lambda r: 100.0 * r["agent"]["within_bound"] / r["agent"]["pods"],
    "baseline_error_p50_ms": lambda r: r["baseline"]["error_ms"]["p50"],
    "baseline_error_p99_ms": lambda r: r["baseline"]["error_ms"]["p99"],
    "baseline_error_max_ms": lambda r: r["baseline"]["error_ms"]["max"],
    "baseline_width_p50_ms": lambda r: r["baseline"]["width_ms"]["p50"],
    "error_ratio_p50": lambda r: r["error_ratio"]["p50"],
    "error_ratio_p99": lambda r: r["error_ratio"]["p99"],
    "agent_cpu_percent_burst": lambda r: max(r["agent_cpu_percent_burst"].values()),
    "agent_peak_rss_mb": lambda r: max(r["agent_peak_rss_mb"].values()),
    "agent_loop_lag_p99_ms": lambda r: max(v["p99"] for v in r["agent_loop_lag_ms"].values()),
    "burst_s": lambda r: max(r["burst_s"].values()),
}


def _summarize(runs: list[Result]) -> Result:
    summary = {}
    for key, pick in SUMMARY.items():
        values = [pick(r) for r in runs]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def bench(args: argparse.Namespace) -> Result:
    setups: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="rtbench-agent-probe-") as tmp:
        for setup in args.setup:
            runs = []
            for index in range(args.runs):
                run_dir = Path(tmp) / f"{setup}-{index}"
                run_dir.mkdir()
                raw = asyncio.run(one_run(index, setup, args, run_dir))
                runs.append(evaluate(index, raw, run_dir))
                r = runs[-1]
                print(
                    f"{setup} run {index}: agent |error| p50 {r['agent']['error_ms']['p50']:.2f} "
                    f"p99 {r['agent']['error_ms']['p99']:.2f} ms, "
                    f"baseline p50 {r['baseline']['error_ms']['p50']:.1f} ms, "
                    f"agent cpu {max(r['agent_cpu_percent_burst'].values()):.1f}%, "
                    f"addresses {r['agent_address_sources']}",
                    file=sys.stderr,
                )
            setups[setup] = {**SETUPS[setup], "summary": _summarize(runs), "runs": runs}
    defaults = ObserveSettings(node="n")
    return {
        "benchmark": "agent_probe",
        "command": " ".join([".venv/bin/python bench/agent_probe.py", *sys.argv[1:]]),
        "config": {k: str(v) for k, v in vars(args).items()},
        "agent_settings": {
            "probe_rate": args.probe_rate or defaults.probe_rate,
            "probe_growth": args.probe_growth or defaults.probe_growth,
            "probe_first_interval_s": defaults.probe_first_interval_s,
            "probe_max_interval_s": defaults.probe_max_interval_s,
        },
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "targets": {
            "default": {"agent_error_p50_ms": 2.0, "agent_error_p99_ms": 5.0},
            "agent_cpu_percent_burst": 15.0,
            "rss_mb": 100.0,
        },
        "setups": setups,
    }


def summary_line(setup: str, s: Result, pods: int, runs: int) -> str:
    def m(key: str, digits: int = 2) -> str:
        return f"{s[key]['median']:.{digits}f}"

    return (
        f"agent_probe [{setup}]: {pods} pods x {runs} runs (median): agent |error| p50 "
        f"{m('agent_error_p50_ms')} ms p99 {m('agent_error_p99_ms')} ms "
        f"(max {s['agent_error_max_ms']['max']:.2f}; first success p99 "
        f"{m('agent_first_success_error_p99_ms')}), bracket p50 {m('agent_width_p50_ms')} ms, "
        f"{m('agent_within_bound_percent', 0)}% within 10 ms; "
        f"500 ms poller p50 {m('baseline_error_p50_ms', 1)} ms p99 "
        f"{m('baseline_error_p99_ms', 1)} ms; ratio p50 {m('error_ratio_p50', 0)}x "
        f"p99 {m('error_ratio_p99', 0)}x; agent CPU {m('agent_cpu_percent_burst', 1)}% of a "
        f"core in the burst, peak RSS {m('agent_peak_rss_mb', 0)} MB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument(
        "--setup",
        action="append",
        choices=tuple(SETUPS),
        help="default, instant-status, no-cri (repeatable; default: all three)",
    )
    parser.add_argument("--probe-rate", type=float, help="agent setting (default: its own)")
    parser.add_argument("--probe-growth", type=float, help="agent setting (default: its own)")
    parser.add_argument("--out-file", type=Path, default=RESULTS)
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    parser.add_argument("--poller", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.agent:
        outcome = asyncio.run(agent_main(args.agent, args.kubeconfig, json.loads(args.settings)))
        Path(args.out).write_text(json.dumps(outcome))
        return 0
    if args.poller:
        Path(args.out).write_text(json.dumps(asyncio.run(poller_main(args.server))))
        return 0
    args.setup = args.setup or list(SETUPS)
    result = bench(args)
    args.out_file.parent.mkdir(parents=True, exist_ok=True)
    args.out_file.write_text(json.dumps(result, indent=2) + "\n")
    for setup, outcome in result["setups"].items():
        print(summary_line(setup, outcome["summary"], args.pods, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The commands ``rtctl start-run``, ``rtctl runs`` and ``rtctl agents``.

``start-run`` is one measured run: preflight (every problem at once, exit 2),
then ``execute_run`` with live progress on stderr (rich on a terminal, plain
lines otherwise), then the summary on stdout, as a table or, with ``--format
json``, as one JSON object with per-pod phase times for scripts. Its
statistics count a pod's phase only within the phase's uncertainty bound
(``--max-uncertainty PHASE=DURATION``, rtctl/bounds.py) and in order; the
table says how many pods each phase counts and names those out of order. Exit 0 when
the run succeeded, 1 when it failed or timed out (the summary is still
printed), 130 when interrupted (cleaned up, run marked aborted).

Leftovers of an earlier run (an rtctl killed mid-run leaves its Deployment)
make preflight refuse the run (exit 2, naming ``--clean-leftovers``). With
that flag, or when the user answers yes to the question asked on a terminal
(default no), they are deleted first, their pods awaited and their run marked
aborted; then the run goes ahead.

``runs`` and ``agents`` list what the collector knows: registered runs with
their state, and the agents with their clock offsets and when they were last
heard from. Both take ``--format json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from rtbench.cli import parse_positive_int
from rtbench.v1 import control_pb2

from .bounds import add_bound_option, parse_bounds
from .cliargs import console, duration_arg
from .control import Collector
from .display import display_for
from .errors import UsageError
from .kube import Cluster
from .preflight import CLEAN_FLAG, clean_leftovers, find_leftovers, preflight
from .settings import add_connection_options, connection_settings
from .startrun import RunRequest, execute_run
from .summarytable import format_ns, state_name, summary_dict, summary_table
from .workload import DEFAULT_IMAGE, DEFAULT_MEMORY, DEFAULT_RUNTIME_CLASS

__all__ = ["add_parser"]

FORMATS = ("text", "json")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label must be KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


def add_parser(subparsers: Any) -> None:
    """Register start-run, runs and agents."""
    start = subparsers.add_parser(
        "start-run",
        help="run one measured deployment of the workload and print its summary",
        description=(
            "Preflight, create the workload Deployment, follow it until every replica "
            "answered (or the timeout), delete it, wait until its pods are gone plus the "
            "settle time, and print the summary. Exit 0 success, 1 run failed or timed out "
            "or an operational error, 2 usage or preflight error, 130 interrupted (Ctrl-C "
            "deletes the Deployment and marks the run aborted; a second Ctrl-C stops "
            "waiting for the pods)."
        ),
    )
    start.add_argument(
        "--runtime-class",
        required=True,
        help=(
            f"RuntimeClass of the pods; {DEFAULT_RUNTIME_CLASS!r}: none, the nodes' default "
            "handler (runc on most clusters, which often have no RuntimeClass for it)"
        ),
    )
    start.add_argument("--variant", help="variant label (default: the runtime class)")
    start.add_argument("--replicas", type=parse_positive_int, default=10, help="pods (default: 10)")
    start.add_argument(
        "--memory",
        default=DEFAULT_MEMORY,
        help=f"memory limit and request (default: {DEFAULT_MEMORY})",
    )
    start.add_argument("--image", default=DEFAULT_IMAGE, help=f"image (default: {DEFAULT_IMAGE})")
    start.add_argument("--test-id", default="adhoc", help="test_id label (default: adhoc)")
    start.add_argument("--namespace", default="default", help="namespace (default: default)")
    start.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra pod label (repeatable)",
    )
    start.add_argument(
        "--timeout",
        type=duration_arg,
        default=300.0,
        metavar="DURATION",
        help="until every replica must answer: 300, 90s, 5m, 1h, 500ms (default: 300 s)",
    )
    start.add_argument(
        "--settle",
        type=duration_arg,
        default=5.0,
        metavar="DURATION",
        help="wait after the pods are gone, as --timeout (default: 5 s)",
    )
    start.add_argument(
        "--keep", action="store_true", help="leave the Deployment in place afterwards"
    )
    start.add_argument("--run-id", help="run id (default: <runtime class>-<12 hex>)")
    start.add_argument(
        CLEAN_FLAG,
        action="store_true",
        help=(
            "delete an earlier run's Deployments and pods left in the namespace (e.g. by an "
            "rtctl that was killed), wait for them to go, mark that run aborted, then run "
            "(without it, leftovers refuse the run; on a terminal rtctl asks, default no)"
        ),
    )
    start.add_argument(
        "--format", choices=FORMATS, default="text", help="summary output (default: text)"
    )
    add_bound_option(start)
    add_connection_options(start)
    start.set_defaults(func=start_run)

    runs = subparsers.add_parser(
        "runs",
        help="list the runs the collector knows",
        description=(
            "List the runs registered with the collector, newest last: id, test, plan, "
            "runtime class and variant, replicas, state, when it was created and how long "
            "it took. --format json gives the same rows for scripts."
        ),
    )
    runs.add_argument("--test-id", default="", help="only runs of this test id")
    runs.add_argument("--plan-id", default="", help="only runs of this plan")
    runs.add_argument("--format", choices=FORMATS, default="text")
    add_connection_options(runs, kubernetes=False)
    runs.set_defaults(func=list_runs)

    agents = subparsers.add_parser(
        "agents",
        help="list the agents with their clock offsets and when they were last seen",
        description=(
            "List the agents the collector knows, one per node: whether each is connected "
            "(or stale: connected but silent for longer than 3 x its clock-sync interval, "
            "which preflight refuses), its version, when it was last heard from, and its "
            "clock offset to the collector "
            "with the uncertainty bound (events from a node without an offset cannot be "
            "placed on the collector's timeline). --format json for scripts."
        ),
    )
    agents.add_argument("--format", choices=FORMATS, default="text")
    add_connection_options(agents, kubernetes=False)
    agents.set_defaults(func=list_agents)


# -- start-run ------------------------------------------------------------------------


def run_request(args: argparse.Namespace) -> RunRequest:
    """The RunRequest the flags describe (raises UsageError)."""
    return RunRequest(
        runtime_class=args.runtime_class,
        variant=args.variant or args.runtime_class,
        replicas=args.replicas,
        image=args.image,
        memory=args.memory,
        test_id=args.test_id,
        namespace=args.namespace,
        labels=_labels(args.label),
        timeout_s=args.timeout,
        settle_s=args.settle,
        keep=args.keep,
        run_id=args.run_id,
        bounds=parse_bounds(args.max_uncertainty),
    )


async def start_run(args: argparse.Namespace) -> int:
    settings = connection_settings(args, os.environ)
    request = run_request(args)
    display = display_for(sys.stderr)
    try:
        async with (
            Collector.connect(settings, ride_out=True) as collector,
            Cluster.connect(settings) as cluster,
        ):
            collector.on_outage = display.note
            if cluster.kubeconfig_note:
                display.note(cluster.kubeconfig_note)
            display.stage("preflight")
            # An API server that does not answer is named by its first request, as in
            # preflight: GET /version, not the leftovers' list.
            await cluster.version()
            leftovers = await find_leftovers(cluster, request.namespace)
            if leftovers and (args.clean_leftovers or _confirm(leftovers.describe())):
                display.stage(f"cleaning up {leftovers.describe()}")
                await clean_leftovers(
                    cluster, collector, leftovers, within=request.timeout_s, note=display.note
                )
            report = await preflight(request, collector, cluster)
            for note in report.notes:
                display.note(note)
            for warning in report.warnings:
                display.note(f"warning: {warning}")
            request = dataclasses.replace(
                request,
                environment=report.environment,
                runtime_mode=report.runtime_mode,
                nodes=report.nodes,
            )
            outcome = await execute_run(request, collector, cluster, display)
    finally:
        # A refused preflight or an early error must not leave the live view (and a
        # hidden cursor) behind: execute_run closes it only once it has started.
        display.close()
    if args.format == "json":
        document = summary_dict(outcome.summary)
        document["create_latency_ns"] = outcome.create_latency_ns
        document["delete_latency_ns"] = outcome.delete_latency_ns
        document["kept"] = request.keep
        json.dump(document, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        out = console()
        out.print(summary_table(outcome.summary))
        out.print(
            f"API latency: create {format_ns(outcome.create_latency_ns)}"
            + (
                f", delete {format_ns(outcome.delete_latency_ns)}"
                if outcome.delete_latency_ns
                else ""
            )
            + (" (Deployment kept)" if request.keep else ""),
            highlight=False,
        )
    if outcome.succeeded:
        return 0
    state = state_name(outcome.state).upper().replace("_", " ")
    print(f"rtctl: run {outcome.run_id} {state}: {outcome.message}", file=sys.stderr)
    return 1


def _confirm(what: str) -> bool:
    """Ask on a terminal whether to clean up ``what``; no terminal or no answer is no."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    sys.stderr.write(f"{what}. Delete them and mark that run aborted? [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


# -- runs and agents --------------------------------------------------------------------


def _when(ns: int) -> str:
    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _run_row(info: control_pb2.RunInfo) -> dict[str, Any]:
    spec = info.spec
    return {
        "run_id": spec.run_id,
        "test_id": spec.test_id,
        "plan_id": spec.plan_id,
        "runtime_class": spec.runtime_class,
        "variant": spec.variant,
        "replicas": spec.replicas,
        "repetition": spec.repetition,
        "state": state_name(info.state),
        "created_ns": info.created_ns,
        "finished_ns": info.finished_ns,
    }


async def list_runs(args: argparse.Namespace) -> int:
    settings = connection_settings(args, os.environ)
    async with Collector.connect(settings) as collector:
        runs = await collector.runs(test_id=args.test_id, plan_id=args.plan_id)
    if args.format == "json":
        json.dump([_run_row(r) for r in runs], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    table = Table(title=f"{len(runs)} runs on collector {settings.collector}")
    for column in (
        "run id",
        "test",
        "plan",
        "runtime/variant",
        "replicas",
        "state",
        "created (UTC)",
    ):
        table.add_column(column)
    table.add_column("duration", justify="right")
    for info in runs:
        spec = info.spec
        duration = (
            format_ns(info.finished_ns - info.created_ns)
            if info.finished_ns and info.created_ns
            else "-"
        )
        table.add_row(
            spec.run_id,
            spec.test_id,
            spec.plan_id or "-",
            f"{spec.runtime_class}/{spec.variant}",
            str(spec.replicas),
            state_name(info.state),
            _when(info.created_ns),
            duration,
        )
    console().print(table)
    return 0


def _connection(agent: control_pb2.AgentInfo) -> str:
    """``yes``, ``no``, or ``stale`` for a connection that stays open while the agent says
    nothing (SIGSTOPped, hung): it counts as not ready."""
    if agent.connected and agent.stale:
        return f"stale (silent > {agent.silence_bound_ns / 1e9:g} s)"
    return "yes" if agent.connected else "no"


def _agent_row(agent: control_pb2.AgentInfo) -> dict[str, Any]:
    clock = agent.clock if agent.HasField("clock") else None
    return {
        "agent_id": agent.agent_id,
        "node": agent.node,
        "agent_version": agent.agent_version,
        "connected": agent.connected,
        "stale": agent.stale,
        "last_seen_ns": agent.last_seen_ns,
        "last_heard_ns": agent.last_heard_ns,
        "silence_bound_ns": agent.silence_bound_ns,
        "committed_sequence": agent.committed_sequence,
        "clock": None
        if clock is None
        else {
            "offset_ns": clock.offset_ns,
            "uncertainty_ns": clock.uncertainty_ns,
            "measured_at_ns": clock.measured_at_ns,
            "samples": clock.samples,
        },
    }


async def list_agents(args: argparse.Namespace) -> int:
    settings = connection_settings(args, os.environ)
    async with Collector.connect(settings) as collector:
        agents = await collector.agents()
    if args.format == "json":
        json.dump([_agent_row(a) for a in agents], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    table = Table(title=f"{len(agents)} agents on collector {settings.collector}")
    for column in (
        "node",
        "agent id",
        "version",
        "connected",
        "last seen",
        "clock offset",
        "samples",
    ):
        table.add_column(column)
    now = time.time_ns()
    for agent in sorted(agents, key=lambda a: (a.node, a.agent_id)):
        if agent.HasField("clock"):
            c = agent.clock
            bound = "?" if c.uncertainty_ns < 0 else f"{c.uncertainty_ns / 1e6:.3f}"
            offset, samples = f"{c.offset_ns / 1e6:+.3f} ms ± {bound} ms", str(c.samples)
        else:
            offset, samples = "unknown", "0"
        last = max(agent.last_seen_ns, agent.last_heard_ns)
        seen = f"{format_ns(max(now - last, 0))} ago" if last else "never"
        table.add_row(
            agent.node,
            agent.agent_id,
            agent.agent_version or "-",
            _connection(agent),
            seen,
            offset,
            samples,
        )
    console().print(table)
    return 0

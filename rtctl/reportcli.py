"""``rtctl report``: fetch runs from the collector and report on them as tables, JSON,
PNG figures and one HTML page.

    rtctl report [RUN_ID ...] [--test-id T] [--plan-id P] [--baseline RUNTIME]
                 [--include-failed] [--out DIR] [--format text|json] [--bootstrap N]
                 [--seed S] [--max-uncertainty PHASE=DURATION ...]

Without run ids, every SUCCEEDED run the collector has (narrowed by --test-id
and --plan-id) is reported on, and the report names every run it left out and
why. Failed and timed-out runs are left out by default because their slowest
pods never answered: they have no first_response, so a runtime that times out
would look faster; ``--include-failed`` keeps them (the tables show pods
measured against pods expected). Runs still going or aborted are always left
out (an aborted run stopped half way). Runs of a plan count once per key: the
run that stands for it by run-plan's own rule (``planrun.standing_run``), so a
FAILED attempt and its SUCCEEDED retry are not pooled. Named run ids are
reported on whatever their state.

``--max-uncertainty PHASE=DURATION`` (rtctl/bounds.py) sets the uncertainty
bound a phase's events must be within to count in the statistics (default:
10 ms for first_response, none for the others); the summaries are asked for
with it, and every table says how many pods each phase counts and why the
others are left out (over the bound, out of order).

``--out DIR`` writes ``report.html`` (self-contained), ``report.json`` and every
figure as PNG, and says where. ``--format json`` prints the whole report for
scripts, per-pod phase times included (ns, with source, uncertainty and the
flags that leave a phase out of the statistics).

``collect_report`` and ``write_report`` are what ``rtctl demo`` and
``rtctl run-plan`` (its final comparison, and ``--out DIR``) call to produce the
same numbers and files without the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rtbench.cli import EXIT_OK, parse_positive_int
from rtbench.v1 import control_pb2

from . import cliargs
from .bounds import NO_CHANGES, UncertaintyBounds, add_bound_option, parse_bounds
from .control import Collector
from .errors import UnknownRun, UsageError
from .htmlreport import render_html
from .planrun import RunKey, standing_run
from .plots import render_plots
from .report import PhaseRow, Report, build_report, state_name
from .reporttables import print_report
from .settings import add_connection_options, connection_settings
from .stats import DEFAULT_RESAMPLES, Spread
from .summarytable import format_memory, summary_dict

__all__ = ["add_parser", "collect_report", "report_json", "run", "select_runs", "write_report"]

FAILED = (control_pb2.RUN_STATE_FAILED, control_pb2.RUN_STATE_TIMED_OUT)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="tables, comparison, plots and an HTML report of finished runs",
        description=(
            "Report on finished runs: per-run and per-runtime tables, a comparison against a"
            " baseline runtime with bootstrap confidence intervals, PNG plots, one HTML page."
        ),
    )
    parser.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="runs to report on")
    parser.add_argument("--test-id", default="", help="only runs with this test id")
    parser.add_argument("--plan-id", default="", help="only runs of this plan")
    parser.add_argument(
        "--baseline", help="runtime the others are compared with (default: runc when present)"
    )
    parser.add_argument(
        "--include-failed",
        action="store_true",
        help="also report failed and timed-out runs (default: succeeded runs only)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="write report.html, report.json and PNGs here"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: tables on the terminal; json: the whole report, per-pod times included",
    )
    parser.add_argument(
        "--bootstrap",
        type=parse_positive_int,
        default=DEFAULT_RESAMPLES,
        metavar="N",
        help=f"bootstrap resamples per ratio (default: {DEFAULT_RESAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    add_bound_option(parser)
    add_connection_options(parser, kubernetes=False)
    parser.set_defaults(func=run)


def select_runs(
    listed: Sequence[control_pb2.RunInfo], include_failed: bool
) -> tuple[list[str], list[str]]:
    """The run ids to report on among ``listed`` (registration order), and notes naming
    the runs left out and why (see the module docstring)."""
    chosen: list[str] = []
    left: dict[str, list[str]] = {}
    by_key: dict[tuple[str, RunKey], list[control_pb2.RunInfo]] = {}
    for info in listed:
        if info.spec.plan_id:
            by_key.setdefault((info.spec.plan_id, RunKey.of(info.spec)), []).append(info)
    standing = {
        key: standing_run(infos, retry_failed=not include_failed) for key, infos in by_key.items()
    }
    for info in listed:
        spec, state = info.spec, info.state
        stands = standing[(spec.plan_id, RunKey.of(spec))] if spec.plan_id else None
        if stands is not None and stands.spec.run_id != spec.run_id:
            why = f"another attempt of the same plan run stands for it ({stands.spec.run_id})"
            left.setdefault(why, []).append(f"{spec.run_id} ({state_name(state)})")
            continue
        if state == control_pb2.RUN_STATE_SUCCEEDED or (include_failed and state in FAILED):
            chosen.append(spec.run_id)
            continue
        why = (
            "failed or timed out (--include-failed keeps them)"
            if state in FAILED
            else "not finished"
        )
        left.setdefault(why, []).append(f"{spec.run_id} ({state_name(state)})")
    notes = [f"left out, {why}: {', '.join(ids)}" for why, ids in left.items()]
    return chosen, notes


async def collect_report(
    collector: Collector,
    run_ids: Sequence[str] = (),
    *,
    test_id: str = "",
    plan_id: str = "",
    baseline: str | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    include_failed: bool = False,
    bounds: UncertaintyBounds = NO_CHANGES,
) -> Report:
    """The report on the named runs, or on the runs matching test and plan id that
    ``select_runs`` keeps, their statistics under ``bounds``.

    Raises UsageError when nothing matches or a named run is unknown, CollectorError
    when a call fails.
    """
    notes: list[str] = []
    if not run_ids:
        listed = await collector.runs(test_id=test_id, plan_id=plan_id)
        run_ids, notes = select_runs(listed, include_failed)
        if not run_ids:
            which = " and ".join(
                f"{name} {value!r}"
                for name, value in (("test id", test_id), ("plan id", plan_id))
                if value
            )
            raise UsageError(
                f"no {'finished' if include_failed else 'succeeded'} runs"
                f"{' with ' + which if which else ''} in the collector"
                + ("" if include_failed else " (--include-failed adds failed ones)")
            )
    summaries, unknown = [], []
    for run_id in run_ids:
        try:
            summaries.append(await collector.summary(run_id, include_pods=True, bounds=bounds))
        except UnknownRun:
            unknown.append(run_id)
    if unknown:
        # Named on the command line: a usage error (exit 2), as an unknown --test-id is.
        raise UsageError(
            f"no run {', '.join(map(repr, unknown))} in the collector (rtctl runs lists them)"
        )
    # Bootstrapping is CPU work: a thread keeps the event loop (and Ctrl-C) responsive.
    return await asyncio.to_thread(
        build_report,
        summaries,
        baseline=baseline,
        resamples=resamples,
        seed=seed,
        notes=notes,
        bounds=bounds.effective,
    )


def write_report(report: Report, out: Path) -> list[Path]:
    """Write report.html, report.json and the PNGs into ``out``; the paths, HTML first."""
    out.mkdir(parents=True, exist_ok=True)
    plots = render_plots(report)
    written = [out / "report.html", out / "report.json"]
    written[0].write_text(render_html(report, plots), encoding="utf-8")
    written[1].write_text(json.dumps(report_json(report), indent=1) + "\n", encoding="utf-8")
    for plot in plots:
        path = out / plot.name
        path.write_bytes(plot.png)
        written.append(path)
    return written


async def run(args: argparse.Namespace) -> int:
    bounds = parse_bounds(args.max_uncertainty)
    settings = connection_settings(args, os.environ)
    async with Collector.connect(settings) as collector:
        report = await collect_report(
            collector,
            args.run_ids,
            test_id=args.test_id,
            plan_id=args.plan_id,
            baseline=args.baseline,
            resamples=args.bootstrap,
            seed=args.seed,
            include_failed=args.include_failed,
            bounds=bounds,
        )
    written = await asyncio.to_thread(write_report, report, args.out) if args.out else []
    if args.format == "json":
        json.dump(report_json(report), sys.stdout, indent=1)
        sys.stdout.write("\n")
        where = sys.stderr
    else:
        print_report(report, cliargs.console())
        where = sys.stdout
    if written:
        figures = sum(p.suffix == ".png" for p in written)
        print(
            f"report: {written[0]} (with {written[1].name} and {figures} PNGs in {args.out})",
            file=where,
        )
    return EXIT_OK


def _phases(rows: Sequence[PhaseRow]) -> dict[str, Any]:
    """Per phase: pods reached, counted (count) and left out, the bound, and the latency
    numbers over the counted pods (null when none counted)."""
    out = {}
    for row in rows:
        d, measured = row.latency, row.count > 0
        numbers = {
            "min_ns": d.min_ns,
            "p50_ns": d.p50_ns,
            "p90_ns": d.p90_ns,
            "p99_ns": d.p99_ns,
            "max_ns": d.max_ns,
            "p50_uncertainty_ns": row.p50_uncertainty_ns,
            "max_uncertainty_ns": row.max_uncertainty_ns,
        }
        out[row.phase] = {
            "count": d.count,
            "reached": row.reached,
            "out_of_order": row.out_of_order,
            "over_bound": row.over_bound,
            "bound_ns": row.bound_ns,
            **{k: v if measured else None for k, v in numbers.items()},
        }
    return out


def _spread(spread: Spread) -> dict[str, int]:
    return {
        "count": spread.count,
        "median_ns": spread.median,
        "min_ns": spread.low,
        "max_ns": spread.high,
    }


def report_json(report: Report) -> dict[str, Any]:
    """The whole report as JSON-ready data: every number of the tables, and every pod."""
    groups = []
    for g in report.groups:
        against: dict[str, Any] = {}
        for c in report.comparisons:
            if c.group != g.key:
                continue
            i = c.interval
            against[c.phase] = (
                None
                if i is None
                else {
                    "ratio": i.ratio,
                    "low": i.low,
                    "high": i.high,
                    "count": i.count,
                    "baseline_count": i.baseline_count,
                    "resamples": i.resamples,
                    "across_environments": c.across_environments,
                    "across_modes": c.across_modes,
                }
            )
        groups.append(
            {
                "runtime": g.key.runtime,
                "mode": g.mode,
                "runtime_class": g.key.runtime_class,
                "variant": g.key.variant,
                "replicas": g.key.replicas,
                "run_ids": list(g.run_ids),
                "pods": g.pods,
                "pods_measured": g.measured,
                "pods_expected": g.expected,
                "failed_pods": g.failed_pods,
                "failures": dict(g.failures),
                "memory_per_pod_bytes": g.memory_per_pod_bytes,
                "memory_per_pod": format_memory(g.memory_per_pod_bytes),
                "phases": _phases(g.phases),
                "first_response_p50_per_run": _spread(g.first_response_p50),
                "all_responded_per_run": _spread(g.all_responded),
                "environments": g.environments,
                "vs_baseline": against,
            }
        )
    by_runtime: dict[str, set[str]] = {}
    for g in report.groups:
        by_runtime.setdefault(g.key.runtime, set()).add(g.mode)
    return {
        # real, simulated, unknown (runs from an older rtctl) or mixed; per runtime below.
        "mode": report.mode,
        "runtime_modes": {
            runtime: modes.pop() if len(modes) == 1 else "mixed"
            for runtime, modes in by_runtime.items()
        },
        "baseline": report.baseline,
        "max_uncertainty_ns": dict(report.bounds),
        "bootstrap": {
            "resamples": report.resamples,
            "seed": report.seed,
            "confidence": report.confidence,
            "percent": report.percent,
        },
        "notes": list(report.notes),
        "environments": [
            {"values": dict(e.values), "run_ids": list(e.run_ids)} for e in report.environments
        ],
        "differing_environment_keys": list(report.differing_keys),
        "groups": groups,
        # Each run exactly as `rtctl start-run --format json` prints it, per-pod times included.
        "runs": [summary_dict(r.summary) for r in report.runs],
    }

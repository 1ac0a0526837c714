"""``rtctl run-plan PLAN.yaml``: the command line of a whole experiment.

It validates the plan (every problem with its line, exit 2), prints the seed
and what a rerun skips, runs what is left one run after another with the run's
own live display under a "run i of n, ETA" line, and ends with the comparison
of every runtime against the plan's baseline (rtctl.reporttables, the same
table ``rtctl report --plan-id`` prints, built by the same ``collect_report``: the
run standing for each key, succeeded runs only unless none succeeded).
``--out DIR`` writes that report's files (``write_report``: report.html,
report.json, PNGs). ``--max-uncertainty PHASE=DURATION`` (rtctl/bounds.py) sets
the uncertainty bounds of every number it prints: each run's line and the
comparison. ``--dry-run`` prints the ordered matrix without contacting
anything. Progress (the seed, each run's live display and result line) goes to
stderr, the comparison to stdout, as with start-run.

A run that fails operationally is recorded as failed and the plan goes on
(rtctl.planrun). Every way of stopping early (a refused preflight, an
operational error outside a run, Ctrl-C) ends with "run the same command
again to resume".

Exit codes: 0 every run of the plan succeeded, 1 some run failed or timed out
(skipped ones included: a resumed plan reports on all of its runs) or an
operational error, 2 an invalid plan or a refused preflight, 130 interrupted
(the current run is aborted and cleaned up; the same command resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rtbench.cli import EXIT_FAILED, EXIT_OK
from rtbench.v1 import control_pb2, events_pb2

from . import cliargs
from .bounds import NO_CHANGES, UncertaintyBounds, add_bound_option, parse_bounds
from .control import Collector
from .display import RunDisplay, display_for
from .errors import Interrupted, RtctlError, UsageError
from .kube import Cluster
from .plan import Plan, load_plan
from .planrun import PlannedRun, PlanOutcome, Resumption, execute_plan, ordered
from .planrun import run_id as planned_run_id
from .report import Report, state_name
from .reportcli import collect_report, write_report
from .reporttables import comparison_table, format_ms, modes_line
from .runtimemode import mode_of
from .settings import ConnectionSettings, add_connection_options, connection_settings
from .startrun import RunOutcome

__all__ = ["TextPlanDisplay", "add_parser", "order_table", "run", "run_plan"]

HELP = "run a plan: runtimes x variants x replicas x repetitions, resumable"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run-plan",
        help=HELP,
        description=(
            "Run every runtime class x variant x replica count x repetition of PLAN, one run "
            "after another in a seeded random order, then compare the runtimes against the "
            "plan's baseline. Rerunning the same plan skips the runs the collector already "
            "has: an interrupted plan resumes. See examples/plan.yaml for the format."
        ),
    )
    parser.add_argument("plan", type=Path, metavar="PLAN.yaml", help="the plan file")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the ordered runs and exit; contacts nothing"
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the keys whose run failed or timed out (default: they count as done)",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", help="order the runs with this seed instead of the plan's"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write the final report here (report.html, report.json, PNGs), as rtctl report does",
    )
    add_bound_option(parser)
    add_connection_options(parser)
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    bounds = parse_bounds(args.max_uncertainty)
    plan = load_plan(args.plan)
    seed = plan.seed if args.seed is None else args.seed
    console = cliargs.console()
    if args.dry_run:
        _say(console, _seed_line(plan, seed, args.seed is not None))
        console.print(order_table(plan, ordered(plan, seed)))
        return EXIT_OK
    settings = connection_settings(args, os.environ)
    progress = Console(stderr=True)
    try:
        outcome, report = await run_plan(
            plan,
            settings,
            console,
            seed=args.seed,
            retry_failed=args.retry_failed,
            progress=progress,
            bounds=bounds,
        )
    except (Interrupted, UsageError):
        # Interrupted says how to resume itself; a usage error (the plan changed under its
        # id, an unknown baseline) is not fixed by running the same command again.
        raise
    except RtctlError as exc:
        return _stopped(plan, exc)
    if args.out:
        written = await asyncio.to_thread(write_report, report, args.out)
        _say(progress, f"report: {written[0]} (with report.json and PNGs in {args.out})")
    failed = outcome.failed
    if failed:
        listed = ", ".join(f"{run.key} ({state_name(state)})" for run, _, state in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        print(
            f"rtctl: plan {plan.plan_id}: not every run succeeded: {listed}{more}", file=sys.stderr
        )
        return EXIT_FAILED
    return EXIT_OK


def _stopped(plan: Plan, error: RtctlError) -> int:
    """The plan stopped before its end: the error, then how to go on."""
    print(f"rtctl: {error}", file=sys.stderr)
    print(
        f"rtctl: plan {plan.plan_id} stopped early: fix the cause and run the same command"
        " again to resume (finished runs are skipped)",
        file=sys.stderr,
    )
    return error.exit_code


async def run_plan(
    plan: Plan,
    settings: ConnectionSettings,
    console: Console,
    *,
    seed: int | None = None,
    retry_failed: bool = False,
    progress: Console | None = None,
    bounds: UncertaintyBounds = NO_CHANGES,
) -> tuple[PlanOutcome, Report]:
    """What ``run-plan`` does after parsing: the runs with their display on ``progress``
    (default: ``console``), then the comparison on ``console``; the report is returned for
    callers that write it out (``rtctl demo``, ``--out``).

    The comparison is ``collect_report`` on the plan id: the same runs and numbers as
    ``rtctl report --plan-id``; succeeded runs only, unless no run succeeded."""
    display = TextPlanDisplay(progress or console, explicit_seed=seed is not None)
    async with (
        Collector.connect(settings, ride_out=True) as collector,
        Cluster.connect(settings) as cluster,
    ):
        collector.on_outage = display.note
        outcome = await execute_plan(
            plan, collector, cluster, display, seed=seed, retry_failed=retry_failed, bounds=bounds
        )
        any_succeeded = any(s == control_pb2.RUN_STATE_SUCCEEDED for _, _, s in outcome.results)
        report = await collect_report(
            collector,
            plan_id=plan.plan_id,
            baseline=plan.baseline,
            seed=outcome.seed,
            include_failed=not any_succeeded,
            bounds=bounds,
        )
    console.print()
    console.print(comparison_table(report))
    _say(console, modes_line(report))
    for note in report.notes:
        _say(console, f"note: {note}")
    _say(console, f"per run and per runtime: rtctl report --plan-id {plan.plan_id}")
    _say(console, _verdict(outcome))
    return outcome, report


def _say(console: Console, text: str) -> None:
    """A plain line: long paths stay on one line, numbers are not coloured."""
    console.print(text, highlight=False, soft_wrap=True)


def _seed_line(plan: Plan, seed: int, explicit: bool) -> str:
    where = "--seed" if explicit else "the plan" if plan.seed_from_file else "the plan id"
    return (
        f"plan {plan.plan_id} ({plan.source}): {plan.size} runs = {len(plan.variants)} runtime"
        f" variants x {len(plan.replicas)} replica counts x {plan.repetitions} repetitions;"
        f" order seed {seed} (from {where})"
    )


def _verdict(outcome: PlanOutcome) -> str:
    states: dict[str, int] = {}
    for _, _, state in outcome.results:
        states[state_name(state)] = states.get(state_name(state), 0) + 1
    counted = ", ".join(f"{count} {name}" for name, count in sorted(states.items()))
    now = len(outcome.results) - outcome.skipped
    return (
        f"plan {outcome.plan.plan_id}: {len(outcome.results)} runs: {counted};"
        f" {now} run now, {outcome.skipped} from earlier invocations"
    )


def order_table(plan: Plan, order: Sequence[PlannedRun]) -> Table:
    table = Table(title=f"plan {plan.plan_id}: the runs in order", title_justify="left")
    for column in ("#", "run id", "runtime class", "variant", "replicas", "rep", "memory"):
        table.add_column(column, justify="right" if column in ("#", "replicas", "rep") else "left")
    table.add_column("image")
    for index, planned in enumerate(order, 1):
        key = planned.key
        table.add_row(
            str(index),
            planned_run_id(plan.plan_id, key),
            key.runtime_class,
            key.variant,
            str(key.replicas),
            str(key.repetition),
            planned.variant.memory,
            planned.variant.image,
        )
    return table


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class TextPlanDisplay:
    """The plan's lines on the console; each run gets CORE's live display (rich or plain)."""

    def __init__(self, console: Console, explicit_seed: bool = False) -> None:
        self._console = console
        self._explicit_seed = explicit_seed

    def _say(self, text: str) -> None:
        _say(self._console, text)

    def planned(
        self, plan: Plan, seed: int, order: Sequence[PlannedRun], state: Resumption
    ) -> None:
        self._say(_seed_line(plan, seed, self._explicit_seed))
        if state.done:
            kinds: dict[str, int] = {}
            for info in state.done.values():
                kinds[state_name(info.state)] = kinds.get(state_name(info.state), 0) + 1
            counted = ", ".join(f"{n} {name}" for name, n in sorted(kinds.items()))
            self._say(
                f"resuming: {len(state.done)} of {len(order)} runs are already in the collector"
                f" ({counted}); skipping them"
                + ("" if state.retry_failed else " (--retry-failed runs failed ones again)")
            )
        for key, infos in sorted(state.redone.items()):
            earlier = ", ".join(f"{i.spec.run_id} {state_name(i.state)}" for i in infos)
            self._say(f"running again {key}: earlier {earlier}")
        if state.foreign:
            self._say(
                f"note: {state.foreign} run(s) under plan id {plan.plan_id} are not in this"
                " plan any more; left alone"
            )

    def note(self, text: str) -> None:
        self._say(f"warning: {text}")

    def run_starting(
        self, position: int, total: int, run: PlannedRun, run_id: str, eta_s: float | None
    ) -> RunDisplay:
        eta = f", ETA {_duration(eta_s)}" if eta_s is not None else ""
        self._say(f"run {position} of {total}: {run.key} (run {run_id}{eta})")
        return display_for(sys.stderr)

    def run_finished(self, run: PlannedRun, outcome: RunOutcome, seconds: float) -> None:
        summary = outcome.summary
        parts = [
            f"{state_name(outcome.state)} in {_duration(seconds)}",
            f"{mode_of(summary.spec).mode.upper()} runtime",
        ]
        stats = {p.phase: p for p in summary.phases}
        first = stats.get(events_pb2.PHASE_FIRST_RESPONSE)
        if first is not None and first.count:
            parts.append(f"first_response p50 {format_ms(first.p50_ns)} ms")
        if not summary.bounds_applied:
            parts.append("no uncertainty bound applied (the collector is older than rtctl)")
        elif first is not None and first.count < first.reached:
            parts.append(f"{first.reached - first.count} first responses left out")
        if summary.all_responded_ns:
            parts.append(f"all responded {format_ms(summary.all_responded_ns)} ms")
        if outcome.state != control_pb2.RUN_STATE_SUCCEEDED and outcome.message:
            parts.append(outcome.message)
        elif summary.failed_pods:
            parts.append(f"{summary.failed_pods} pods failed")
        self._say(f"  {run.key}: " + ", ".join(parts))

    def run_errored(
        self,
        run: PlannedRun,
        run_id: str,
        error: RtctlError,
        seconds: float,
        state: control_pb2.RunState | None,
    ) -> None:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        took = _duration(seconds)
        if state is None:
            told = f"FAILED in {took} before it was registered ({first}); a rerun runs it"
        elif state == control_pb2.RUN_STATE_FAILED:
            told = f"FAILED in {took} ({first}); recorded as failed (run {run_id})"
        else:
            told = f"{state_name(state)} in {took}, then the teardown failed ({first})"
        self._say(f"  {run.key}: {told}, going on with the next run")

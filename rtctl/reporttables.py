"""The console form of a report: rich tables per runtime, the comparison against the
baseline, the environments, and the whole text report.

Kept apart from rtctl/report.py (which computes) so the numbers have one home
and every output (console, JSON, HTML) only formats them. ``comparison_table``
is also what ``rtctl run-plan`` prints at the end of a plan. The per-run tables
are CORE's ``summary_table`` (rtctl/summarytable.py), the same table
``rtctl start-run`` prints, so a run looks the same wherever it is shown.

Latencies are shown in milliseconds (two decimals below 10 ms, where containerd
phases live; one above); a ratio is "1.42 [1.31, 1.55]" with its interval, and
"≠env" marks a ratio between runs taken in different environments, "≠mode" one
between a real and a simulated (or unknown) runtime. Every runtime's table title
and the comparison's title say REAL, SIMULATED or UNKNOWN, and the text
report opens with the runtime modes (rtctl/runtimemode.py). Each phase
row says how many of the pods that reached the phase its numbers count ("8/10
within 10 ms, 1 out of order"), the report states the uncertainty bounds it
applied, and ``out_of_order_table`` names every pod phase left out as out of
order (the first ``OUT_OF_ORDER_ROWS``; the JSON has them all).
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .bounds import format_bound
from .report import Comparison, GroupReport, PhaseRow, Report
from .stats import RatioInterval, Spread
from .summarytable import counted_text, format_failures, format_memory, format_ns, summary_table

__all__ = [
    "OUT_OF_ORDER_HEAD",
    "OUT_OF_ORDER_ROWS",
    "comparison_table",
    "environment_table",
    "format_ms",
    "format_ratio",
    "group_table",
    "modes_line",
    "out_of_order_rows",
    "out_of_order_table",
    "print_report",
    "render_text",
]

OUT_OF_ORDER_ROWS = 20
"""Out-of-order pod phases listed on a terminal; report.json and report.html list all."""


def format_ms(ns: int | float) -> str:
    ms = ns / 1e6
    return f"{ms:.2f}" if abs(ms) < 10 else f"{ms:.1f}"


def format_ratio(interval: RatioInterval | None) -> str:
    if interval is None:
        return "-"
    return f"{interval.ratio:.2f} [{interval.low:.2f}, {interval.high:.2f}]"


def _spread_ms(spread: Spread) -> str:
    if spread.count == 0:
        return "-"
    if spread.count == 1:
        return format_ms(spread.median)
    return f"{format_ms(spread.median)} ({format_ms(spread.low)}-{format_ms(spread.high)})"


def row_counted(row: PhaseRow) -> str:
    """``8/10 within 10 ms, 1 out of order`` for a phase row."""
    return counted_text(row.count, row.reached, row.bound_ns, row.out_of_order)


def _memory(group: GroupReport) -> str:
    return format_memory(group.memory_per_pod_bytes)


def _vs_baseline(report: Report, group: GroupReport, comparison: Comparison | None) -> Text:
    if group.key.runtime == report.baseline:
        return Text("baseline", style="dim")
    if comparison is None:
        return Text("-")
    text = Text(format_ratio(comparison.interval))
    if comparison.across_environments:
        text.append(" ≠env", style="bold yellow")
    if comparison.across_modes:
        text.append(" ≠mode", style="bold yellow")
    return text


def _modes_title(report: Report) -> str:
    """``every runtime SIMULATED``, or each runtime's mode when they differ: the table's
    columns are already as many as a terminal holds."""
    if report.mode != "mixed":
        return f"every runtime {report.mode.upper()}"
    return modes_line(report)


def modes_line(report: Report) -> str:
    """``runtime modes: runc x20 REAL; runsc x20 SIMULATED``."""
    return "runtime modes: " + "; ".join(
        f"{label} {mode.upper()}" for label, mode in report.modes.items()
    )


def group_table(report: Report, group: GroupReport) -> Table:
    """One runtime (runtime class, variant, replicas): phases by percentiles over all its pods."""
    failures = format_failures(group.failed_pods, group.failures)
    table = Table(
        title=(
            f"{group.key.label} ({group.mode.upper()} runtime): {len(group.run_ids)} runs,"
            f" {group.pods} pods,"
            f" measured {group.measured} of {group.expected} expected"
        ),
        caption=(
            f"failed pods {failures}; memory per pod {_memory(group)};"
            f" latency from the Deployment's create, ms, over the pods counted"
        ),
        title_justify="left",
    )
    table.add_column("phase")
    table.add_column("pods", justify="right")
    table.add_column("counted", justify="right")
    for column in ("p50", "p90", "p99", "max", "± p50"):
        table.add_column(column, justify="right")
    table.add_column(f"p{report.percent} vs {report.baseline} [{report.confidence:.0%} CI]")
    for row in group.phases:
        d = row.latency
        numbers = (d.p50_ns, d.p90_ns, d.p99_ns, d.max_ns, row.p50_uncertainty_ns)
        table.add_row(
            row.phase,
            str(row.reached),
            row_counted(row),
            *(format_ms(ns) if d.count else "-" for ns in numbers),
            _vs_baseline(report, group, report.comparison(group.key, row.phase)),
        )
    return table


OUT_OF_ORDER_HEAD = ("run", "pod", "#", "phase (left out)", "seen before", "early by", "beyond ±")


def out_of_order_rows(report: Report) -> list[list[str]]:
    """A row per out-of-order pod phase of the report, cells as ``OUT_OF_ORDER_HEAD``."""
    return [
        [
            run.run_id,
            v.pod,
            str(v.ordinal),
            v.phase,
            v.must_follow,
            format_ns(v.early_by_ns),
            format_ns(v.beyond_ns),
        ]
        for run, v in report.out_of_order
    ]


def out_of_order_table(report: Report, limit: int = OUT_OF_ORDER_ROWS) -> Table | None:
    """The pod phases left out as out of order, run by run; None when there are none."""
    rows = out_of_order_rows(report)
    if not rows:
        return None
    more = len(rows) - limit
    table = Table(
        title=f"out of order: {len(rows)} pod phases, left out of their statistics",
        caption=(
            "a phase seen before a phase it must follow, beyond both events' uncertainties"
            + (f"; {more} more in --format json and report.html" if more > 0 else "")
        ),
        title_justify="left",
    )
    for column in OUT_OF_ORDER_HEAD:
        numeric = column in ("#", "early by", "beyond ±")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows[:limit]:
        table.add_row(*row)
    return table


def comparison_table(report: Report, phase: str = "first_response") -> Table:
    """Every runtime in one table against the baseline, for one phase (first_response)."""
    table = Table(
        title=f"{phase} by runtime, against {report.baseline}; {_modes_title(report)}",
        caption=(
            f"ms from the Deployment's create; ratio = p{report.percent}/p{report.percent}"
            f" of the baseline with the same replicas, {report.confidence:.0%} bootstrap CI"
            f" ({report.resamples} resamples, seed {report.seed}; runs then pods when a runtime"
            " has several runs); pods: measured (answered, counted) / expected (replicas asked"
            f" for); uncertainty bounds: {report.bounds_text}; per-run p50 and all responded:"
            " median (min-max) over repetitions"
        ),
        title_justify="left",
    )
    bound = report.bounds.get("first_response")  # what pods measured counts by
    pods = f"pods within {format_bound(bound)}" if bound is not None else "pods"
    for column in ("runtime", "replicas", "runs", pods, "failed"):
        table.add_column(column, justify="left" if column == "runtime" else "right")
    for column in ("p50", "p90", "max"):
        table.add_column(column, justify="right")
    table.add_column("ratio [CI]")
    table.add_column("per-run p50", justify="right")
    table.add_column("all responded", justify="right")
    table.add_column("memory/pod", justify="right")
    for group in report.groups:
        row = group.phase(phase)
        cells = ["-", "-", "-"]
        if row is not None and row.count:
            cells = [format_ms(row.latency.p50_ns), format_ms(row.latency.p90_ns)]
            cells.append(format_ms(row.latency.max_ns))
        table.add_row(
            group.key.runtime,
            str(group.key.replicas),
            str(len(group.run_ids)),
            f"{group.measured}/{group.expected}",
            str(group.failed_pods),
            *cells,
            _vs_baseline(report, group, report.comparison(group.key, phase)),
            _spread_ms(group.first_response_p50),
            _spread_ms(group.all_responded),
            _memory(group),
        )
    return table


def environment_table(report: Report) -> Table:
    """Each environment key and its value(s); keys that differ between runs are marked."""
    table = Table(title="environment", title_justify="left")
    table.add_column("key")
    table.add_column("value")
    table.add_column("runs", justify="right")
    keys = sorted({k for env in report.environments for k in env.values})
    for key in keys:
        differs = key in report.differing_keys
        for env in report.environments:
            value = env.values.get(key, "(not recorded)")
            style = "bold yellow" if differs else ""
            table.add_row(Text(key, style=style), value, str(len(env.run_ids)))
            if not differs:
                break
    if not keys:
        table.add_row("(none recorded)", "", str(len(report.runs)))
    return table


def render_text(report: Report, *, per_run: bool = True) -> RenderableType:
    """The whole report for a terminal: bounds, environment, runs, runtimes, out-of-order
    pods, comparison, notes."""
    parts: list[RenderableType] = [
        Text(modes_line(report), style="bold"),
        Text(f"uncertainty bounds: {report.bounds_text} (--max-uncertainty PHASE=DURATION)"),
        environment_table(report),
    ]
    if per_run:
        for run in report.runs:
            parts.append(Text(f"\nrun {run.run_id} ({run.key.label}, {run.state})", style="bold"))
            parts.append(summary_table(run.summary))
    parts.extend(group_table(report, group) for group in report.groups)
    out_of_order = out_of_order_table(report)
    if out_of_order is not None:
        parts.append(out_of_order)
    phases = {row.phase for group in report.groups for row in group.phases}
    if "first_response" in phases:
        parts.append(comparison_table(report))
    for note in report.notes:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


def print_report(report: Report, console: Console, *, per_run: bool = True) -> None:
    console.print(render_text(report, per_run=per_run))

"""How a run is shown: the plain progress lines, the summary table and its JSON.

Pure: messages are built here, rendered to strings and read back.
"""

from __future__ import annotations

import io
import json

from rich.console import Console

from rtbench.v1 import control_pb2, events_pb2
from rtctl.display import PlainDisplay, _View, countdown_label, display_for, phase_name
from rtctl.plan import Variant
from rtctl.plancli import TextPlanDisplay
from rtctl.planrun import PlannedRun, RunKey
from rtctl.startrun import RunOutcome
from rtctl.summarytable import format_ns, summary_dict, summary_table

P = events_pb2


def progress(replicas: int, **counts: int) -> control_pb2.Progress:
    return control_pb2.Progress(
        run_id="r",
        replicas=replicas,
        counts=[
            control_pb2.PhaseCount(phase=getattr(P, f"PHASE_{name.upper()}"), count=n)
            for name, n in counts.items()
        ],
    )


def test_plain_lines_are_throttled_but_the_last_counts_of_a_step_are_kept() -> None:
    out = io.StringIO()
    display = PlainDisplay(out, interval_s=60.0)
    display.stage("waiting for 3 replicas to answer")
    # The collector sends phases in enum order; the display shows lifecycle order.
    display.progress(progress(3, first_response=1, scheduled=3, sandbox_started=2))
    display.progress(progress(3, first_response=3, scheduled=3, sandbox_started=3))  # held
    display.stage("deleting Deployment x")
    display.countdown("pods gone", 1, 3)
    display.countdown("pods gone", 3, 3)  # the end of a countdown is always shown
    display.close()
    lines = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "waiting for 3 replicas to answer",
        "pods: scheduled 3/3, sandbox_started 2/3, first_response 1/3",
        "pods: scheduled 3/3, sandbox_started 3/3, first_response 3/3",
        "deleting Deployment x",
        "pods gone: 1/3",
        "pods gone: 3/3",
    ]


def test_a_pipe_gets_plain_lines() -> None:
    assert isinstance(display_for(io.StringIO()), PlainDisplay)


def summary() -> control_pb2.RunSummary:
    made = control_pb2.RunSummary(
        spec=control_pb2.RunSpec(
            run_id="run-7", runtime_class="kata-fc", variant="fc", replicas=4,
            environment={"cluster_type": "k3s", "kubernetes_version": "v1.32.1+k3s1"},
        ),
        state=control_pb2.RUN_STATE_FAILED,
        created_ns=1_000,
        all_responded_ns=0,
        failed_pods=1,
        memory_per_pod_bytes=135 * 2**20,
        bounds_applied=True,
    )  # fmt: skip
    made.max_uncertainty.add(phase=P.PHASE_FIRST_RESPONSE, max_uncertainty_ns=10_000_000)
    for phase, p50 in (
        (P.PHASE_READY, 900_000_000),
        (P.PHASE_GONE, 5_000_000_000),
        (P.PHASE_SCHEDULED, 20_000_000),
        (P.PHASE_SANDBOX_STARTED, 400_000_000),
        (P.PHASE_FIRST_RESPONSE, 850_000_000),
    ):
        made.phases.add(
            phase=phase, count=3, reached=3, p50_ns=p50, p90_ns=p50, p99_ns=p50, max_ns=p50
        )
    # Of 4 answers, one was over the 10 ms bound and one out of order.
    made.phases[-1].reached, made.phases[-1].over_bound, made.phases[-1].count = 4, 1, 2
    made.phases[-1].out_of_order = 1
    made.out_of_order.add(
        ordinal=1,
        pod_name="pod-1",
        pod_uid="u1",
        phase=P.PHASE_FIRST_RESPONSE,
        must_follow=P.PHASE_CONTAINER_STARTED,
        early_by_ns=12_000_000,
        beyond_uncertainty_ns=1_500_000,
    )
    made.failures.add(reason="OOMKilled", count=1)
    made.rtctl_clock.CopyFrom(events_pb2.ClockOffset(offset_ns=120_000, uncertainty_ns=300_000))
    made.clocks.add(agent_id="a1", node="pi5", clock=events_pb2.ClockOffset(uncertainty_ns=-1))
    pod = made.pods.add(ordinal=0, pod=events_pb2.PodRef(uid="u0", name="pod-0", node="pi5"))
    pod.phases.add(
        phase=P.PHASE_FIRST_RESPONSE,
        source=P.SOURCE_PROBE,
        time_ns=9,
        latency_ns=8,
        uncertainty_ns=1,
    )
    return made


def test_the_table_orders_start_up_phases_by_lifecycle_and_states_the_facts() -> None:
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(summary()))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rows = [line for line in text.splitlines() if "/4" in line]
    order = [row.split("│")[1].strip() for row in rows]
    assert order == ["scheduled", "sandbox_started", "first_response", "ready"]
    assert "gone" not in order, "teardown phases stay out of the start-up table"
    assert "run run-7: kata-fc/fc, 4 replicas, failed" in text
    assert "not all 4 replicas responded" in text
    assert "failed pods: 1 (1 with OOMKilled)" in text
    assert "memory per pod: 135.0 MiB" in text
    assert "rtctl clock: +0.120 ms ± 0.300 ms" in text
    assert "agent pi5 clock: +0.000 ms ± unknown" in text
    assert "cluster_type=k3s, kubernetes_version=v1.32.1+k3s1" in text
    assert "850.0 ms" in text and "20.0 ms" in text


def test_the_table_shows_pods_left_out_beside_the_bound_and_names_those_out_of_order() -> None:
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(summary()))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    first = next(line for line in text.splitlines() if "│ first_response" in line)
    assert "4/4" in first and "2/4 within 10 ms, 1 out of order" in first
    ready = next(line for line in text.splitlines() if "│ ready" in line)
    assert "3/3" in ready and "within" not in ready
    assert "uncertainty bounds: first_response ≤ 10 ms; other phases unbounded" in text
    assert "out of order: 1 pod phases" in text
    assert (
        "pod pod-1 (#1): first_response 12.0 ms before container_started"
        " (1.5 ms beyond the uncertainties)" in text
    )
    # Every replica answered, one failed and two answers are left out: no all-responded
    # time, and why.
    assert (
        "not all 4 replicas responded (failed pods do not count; 2 first responses left out,"
        " over the bound or out of order)" in text
    )
    unfailed = summary()
    unfailed.failed_pods = 0
    unfailed.ClearField("failures")
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(unfailed))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "all 4 replicas responded, but 2 of their first responses are left out" in text


def test_a_summary_from_an_older_collector_is_not_shown_as_bounded() -> None:
    old = summary()
    old.bounds_applied = False
    old.ClearField("max_uncertainty")
    for stats in old.phases:
        stats.reached = stats.out_of_order = stats.over_bound = 0
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(old))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "the collector applied no uncertainty bound and no order check" in text
    first = next(line for line in text.splitlines() if "│ first_response" in line)
    assert "unchecked" in first and "within" not in first
    assert "not all 4 replicas responded" in text
    document = summary_dict(old)
    assert document["bounds_applied"] is False and document["max_uncertainty_ns"] == {}
    assert document["phases"]["first_response"]["reached"] is None


def test_a_phase_no_pod_counted_has_no_latencies() -> None:
    made = summary()
    fr = made.phases[-1]
    fr.count, fr.over_bound = 0, 3
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(made))
    first = next(
        line
        for line in console.file.getvalue().splitlines()  # type: ignore[attr-defined]
        if "│ first_response" in line
    )
    assert "0/4 within 10 ms" in first and "850.0" not in first and first.count(" - │") == 6
    numbers = summary_dict(made)["phases"]["first_response"]
    assert numbers["count"] == 0 and numbers["p50_ns"] is None and numbers["reached"] == 4


def test_json_keeps_integers_and_names() -> None:
    document = json.loads(json.dumps(summary_dict(summary())))
    assert document["state"] == "failed"
    assert list(document["phases"]) == [
        "scheduled", "sandbox_started", "first_response", "ready", "gone",
    ]  # fmt: skip
    assert document["phases"]["ready"]["p50_ns"] == 900_000_000
    assert document["failures"] == {"OOMKilled": 1}
    assert document["clocks"][0]["clock"]["uncertainty_ns"] == -1
    (pod,) = document["pods"]
    assert pod["phases"]["first_response"] == {
        "source": "probe", "time_ns": 9, "latency_ns": 8, "uncertainty_ns": 1,
        "over_bound": False, "out_of_order": False,
    }  # fmt: skip
    assert document["bounds_applied"] is True
    assert document["max_uncertainty_ns"] == {"first_response": 10_000_000}
    first = document["phases"]["first_response"]
    assert (first["count"], first["reached"], first["over_bound"], first["out_of_order"]) == (
        2, 4, 1, 1,
    )  # fmt: skip
    assert first["bound_ns"] == 10_000_000 and document["phases"]["ready"]["bound_ns"] is None
    assert document["out_of_order"] == [
        {
            "ordinal": 1, "name": "pod-1", "uid": "u1", "phase": "first_response",
            "must_follow": "container_started", "early_by_ns": 12_000_000,
            "beyond_uncertainty_ns": 1_500_000,
        }
    ]  # fmt: skip


def test_durations_read_naturally() -> None:
    assert format_ns(850) == "1 µs"
    assert format_ns(1_234_567) == "1.2 ms"
    assert format_ns(12_340_000_000) == "12.34 s"
    assert format_ns(-2_000_000) == "-2.0 ms"
    assert phase_name(P.PHASE_CONTAINER_CREATED) == "container_created"


def test_countdowns_read_the_same_in_plain_lines_and_the_live_view() -> None:
    assert countdown_label(12, 30) == "12/30"
    assert countdown_label(1.25, 5.0) == "1.2/5.0 s"
    stream = io.StringIO()
    plain = PlainDisplay(stream, interval_s=0)
    plain.countdown("pods gone", 30, 30)
    plain.countdown("settle", 5.0, 5.0)
    assert stream.getvalue().splitlines()[0].endswith("pods gone: 30/30")
    assert stream.getvalue().splitlines()[1].endswith("settle: 5.0/5.0 s")
    # The live view (rendered to a string) shows the same label next to its bar.
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    view = _View()
    view.stage = "settling"
    view.countdown = ("settle", 2.5, 5.0)
    console.print(view)
    assert "2.5/5.0 s" in console.file.getvalue()  # type: ignore[attr-defined]


def test_a_plan_run_line_says_what_its_first_responses_rest_on() -> None:
    key = RunKey("runc", "runc", 4, 1)
    run = PlannedRun(key, Variant("runc", "runc", "img", "16Mi"))
    stream = io.StringIO()
    display = TextPlanDisplay(Console(file=stream, width=200))
    bounded = summary()
    bounded.state = control_pb2.RUN_STATE_SUCCEEDED
    done = RunOutcome("r1", control_pb2.RUN_STATE_SUCCEEDED, bounded)
    display.run_finished(run, done, 12.0)
    old = summary()
    old.bounds_applied = False
    display.run_finished(run, RunOutcome("r2", control_pb2.RUN_STATE_SUCCEEDED, old), 12.0)
    first, second = stream.getvalue().splitlines()
    assert "first_response p50 850.0 ms, 2 first responses left out" in first
    assert "no uncertainty bound applied (the collector is older than rtctl)" in second

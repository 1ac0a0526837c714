"""The plan file: validation names line and field, the matrix, its seeded order, resumption.

Fast and without a cluster: plans are parsed from text, resumption is fed
``RunInfo`` messages as the collector's ListRuns returns them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtbench.v1 import control_pb2
from rtctl.errors import UsageError
from rtctl.plan import Plan, PlanInvalid, load_plan, parse_plan
from rtctl.planrun import RunKey, matrix, ordered, resume, run_id
from rtctl.reportcli import select_runs
from rtctl.workload import DEFAULT_IMAGE, deployment_name

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

GOOD = """\
plan: pi5
seed: 11
test_id: pi5-startup
replicas: [3, 5]
repetitions: 2
timeout: 2m
settle: 1.5
baseline: runc
labels: {team: systems}
runtimes:
  runc:
  kata-qemu: {memory: 16Mi}
  urunc:
    memory: 20Mi
    variants:
      unikraft-qemu: {memory: 16Mi, image: "example.org/unikraft:1"}
      linux-qemu:
"""


def problems(text: str, source: str = "plan.yaml") -> list[str]:
    with pytest.raises(PlanInvalid) as caught:
        parse_plan(textwrap.dedent(text), source)
    lines = [str(problem) for problem in caught.value.problems]
    assert str(caught.value).splitlines()[1:] == lines
    assert caught.value.exit_code == 2
    return lines


def test_a_good_plan_gets_its_values_and_defaults() -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    assert plan.plan_id == "pi5" and plan.seed == 11 and plan.seed_from_file
    assert plan.test_id == "pi5-startup" and plan.namespace == "default"
    assert plan.replicas == (3, 5) and plan.repetitions == 2
    assert plan.timeout_s == 120.0 and plan.settle_s == 1.5
    assert plan.labels == {"team": "systems"} and plan.baseline == "runc"
    got = [(v.runtime_class, v.name, v.image, v.memory) for v in plan.variants]
    assert got == [
        ("runc", "runc", DEFAULT_IMAGE, "16Mi"),
        ("kata-qemu", "kata-qemu", DEFAULT_IMAGE, "16Mi"),
        ("urunc", "unikraft-qemu", "example.org/unikraft:1", "16Mi"),
        ("urunc", "linux-qemu", DEFAULT_IMAGE, "20Mi"),
    ]
    assert plan.size == 4 * 2 * 2


def test_defaults_come_from_the_file_name() -> None:
    plan = parse_plan("runtimes: [runc, crun]\nreplicas: 10\n", "some/dir/My Plan_2.yaml")
    assert plan.plan_id == "my-plan-2" and plan.test_id == "my-plan-2"
    assert not plan.seed_from_file
    assert plan.seed == parse_plan("runtimes: [crun]\nreplicas: 1\n", "my-plan-2.yml").seed
    assert plan.replicas == (10,) and plan.repetitions == 3 and plan.baseline == "runc"
    assert plan.timeout_s == 300.0 and plan.settle_s == 5.0


def test_the_example_plan_is_valid() -> None:
    plan = load_plan(REPO / "examples" / "plan.yaml")
    assert plan.size > 0
    assert any(variant.runtime_class == "urunc" for variant in plan.variants)


def test_a_bad_quantity_names_line_field_and_the_fix() -> None:
    found = problems(
        """\
        replicas: [10]
        runtimes:
          runc:
          kata-qemu:
            variants:
              default:
                memory: 16MB
        """
    )
    assert len(found) == 1
    assert found[0].startswith(
        "plan.yaml:7: runtimes.kata-qemu.variants.default.memory: '16MB' is not a "
        "Kubernetes quantity (e.g. 16Mi)"
    )
    assert "16Mi" in found[0] and "16M " in found[0]


@pytest.mark.parametrize(
    ("memory", "hint"),
    [("16m", "milli"), ("16", "less than a MiB"), ("0Mi", "above zero"), ("16 MiB", "write 16Mi")],
)
def test_memory_slips_get_a_pointed_hint(memory: str, hint: str) -> None:
    found = problems(f"replicas: 1\nmemory: '{memory}'\nruntimes: [runc]\n")
    assert found[0].startswith(f"plan.yaml:2: memory: {memory!r}") and hint in found[0]


def test_unknown_keys_are_errors_with_a_did_you_mean() -> None:
    found = problems(
        """\
        replicas: [10]
        repetition: 5
        runtimes:
          runc: {memroy: 16Mi}
          crun: {variants: {a: {imag: x}}}
        frobnicate: true
        """
    )
    assert found == [
        "plan.yaml:2: repetition: unknown key (did you mean 'repetitions'?)",
        "plan.yaml:4: runtimes.runc.memroy: unknown key (did you mean 'memory'?)",
        "plan.yaml:5: runtimes.crun.variants.a.imag: unknown key (did you mean 'image'?)",
        "plan.yaml:6: frobnicate: unknown key",
    ]


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    found = problems(
        """\
        plan: Not An Id
        seed: -1
        replicas: [3, 3, 0, many]
        timeout: soon
        labels: {app: mine, "bad key!": x, ok: "bad value!"}
        baseline: rnc
        runtimes:
          runc:
          Bad_Class:
        """
    )
    lines = [line.split(":")[1] for line in found]
    assert lines == ["1", "2", "3", "3", "3", "4", "5", "5", "5", "6", "9"]
    text = "\n".join(found)
    assert "plan: 'Not An Id' is not a plan id" in text
    assert "seed: must be at least 0, got -1" in text
    assert "replicas[1]: 3 is listed twice (first on line 3)" in text
    assert "replicas[2]: must be at least 1, got 0" in text
    assert "replicas[3]: expected a whole number, got 'many'" in text
    assert "timeout: 'soon' is not a duration" in text
    assert "labels.app: 'app' is set by rtctl on every pod" in text
    assert "labels.bad key!: label key 'bad key!': the name must be" in text
    assert "labels.ok: 'bad value!' must be letters, digits" in text
    assert "baseline: 'rnc' is not in the matrix (did you mean 'runc'?)" in text
    assert "runtimes.Bad_Class: 'Bad_Class' is not a valid name" in text


def test_duplicate_variants_and_runtimes_are_errors() -> None:
    found = problems(
        """\
        replicas: 1
        runtimes:
          urunc:
            variants:
              linux-qemu: {memory: 20Mi}
              linux-qemu: {memory: 16Mi}
          crun:
          crun:
          kata:
            variants: [a, b, a]
        """
    )
    assert found == [
        "plan.yaml:6: runtimes.urunc.variants.linux-qemu: duplicate variant (first on line 5)",
        "plan.yaml:8: runtimes.crun: duplicate runtime class (first on line 7)",
        "plan.yaml:10: runtimes.kata.variants.a: duplicate variant (first on line 10)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runtimes: []\nreplicas: [1]\n", ["plan.yaml:1: runtimes: empty"]),
        ("runtimes:\nreplicas: [1]\n", ["plan.yaml:1: runtimes: empty"]),
        ("runtimes: [runc]\nreplicas: []\n", ["plan.yaml:2: replicas: empty"]),
        (
            "runtimes: {urunc: {variants: {}}}\nreplicas: 1\n",
            ["plan.yaml:1: runtimes.urunc.variants: empty"],
        ),
        (
            "seed: 1\n",
            ["plan.yaml:1: runtimes: missing", "plan.yaml:1: replicas: missing"],
        ),
    ],
)
def test_an_empty_matrix_is_refused(text: str, expected: list[str]) -> None:
    found = problems(text)
    assert len(found) == len(expected)
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "empty plan"),
        ("- runc\n", 1, "expected a mapping, got a list"),
        ("replicas: 1\nruntimes: [runc\n", 3, "not valid YAML"),
        ("replicas: 1\nruntimes: runc\n", 2, "expected runtime class names"),
        ("replicas: 1\nbase: &b {memory: 16Mi}\nruntimes: [runc]\n", 2, "unknown key"),
        ("replicas: 1\nruntimes:\n  runc:\n    <<: {memory: 1Mi}\n", 4, "merge keys"),
        ("replicas: true\nruntimes: [runc]\n", 1, "expected a whole number, got 'true'"),
        ("replicas: 1\nsettle: -1\nruntimes: [runc]\n", 2, "seconds >= 0"),
        ("replicas: 1\nnamespace: Bench\nruntimes: [runc]\n", 2, "not a namespace name"),
        ("replicas: 1\nimage: 'a b'\nruntimes: [runc]\n", 2, "not an image reference"),
    ],
)
def test_structural_problems_name_their_line(text: str, line: int, words: str) -> None:
    found = problems(text)
    assert found[0].startswith(f"plan.yaml:{line}:"), found
    assert words in found[0]


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the plan"):
        load_plan(tmp_path / "missing.yaml")


# -- the matrix and its order ----------------------------------------------------------------


def keys(plan: Plan, seed: int) -> list[RunKey]:
    return [run.key for run in ordered(plan, seed)]


def test_the_same_seed_gives_the_same_order_and_another_seed_another() -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    assert keys(plan, 1) == keys(plan, 1)
    assert keys(plan, 1) != keys(plan, 2)
    assert keys(plan, plan.seed) == keys(parse_plan(GOOD, "elsewhere.yaml"), plan.seed)


def test_every_key_runs_once_and_each_repetition_is_a_complete_block() -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    order = keys(plan, 5)
    assert Counter(order) == Counter(run.key for run in matrix(plan))
    assert len(order) == plan.size == len(set(order))
    block = len(plan.variants) * len(plan.replicas)
    for index in range(plan.repetitions):
        assert {key.repetition for key in order[index * block : (index + 1) * block]} == {index + 1}


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_seed_yields_a_permutation(seed: int) -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    assert sorted(keys(plan, seed)) == sorted(run.key for run in matrix(plan))


def test_run_ids_are_stable_distinct_and_label_safe() -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    ids = [run_id(plan.plan_id, run.key) for run in matrix(plan)]
    assert len(set(ids)) == len(ids)
    assert ids == [run_id("pi5", run.key) for run in matrix(parse_plan(GOOD, "x.yaml"))]
    assert ids[0].startswith("pi5-runc-n3-r1-")
    long = RunKey("a" * 60 + ".x", "Variant_" + "b" * 50, 100, 12)
    retried = run_id("p" * 40, long, attempt=3)
    for value in [*ids, run_id("p" * 40, long), retried]:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value)
        assert deployment_name(value) == f"rtbench-{value}"  # never cut short
    assert retried.endswith("-a3") and retried != run_id("p" * 40, long, attempt=2)
    # Names with dashes that read alike still get different ids.
    assert run_id("p", RunKey("a-b", "c", 1, 1)) != run_id("p", RunKey("a", "b-c", 1, 1))


# -- resumption --------------------------------------------------------------------------------


def info(
    plan: Plan, key: RunKey, state: control_pb2.RunState, attempt: int = 1, memory: str = ""
) -> control_pb2.RunInfo:
    variant = next((v for v in plan.variants if v.name == key.variant), plan.variants[0])
    return control_pb2.RunInfo(
        spec=control_pb2.RunSpec(
            run_id=run_id(plan.plan_id, key, attempt),
            runtime_class=key.runtime_class,
            variant=key.variant,
            replicas=key.replicas,
            repetition=key.repetition,
            plan_id=plan.plan_id,
            image=variant.image,
            memory_limit=memory or variant.memory,
            test_id=plan.test_id,
            namespace=plan.namespace,
        ),
        state=state,
    )


def test_resumption_skips_finished_keys_and_redoes_aborted_ones() -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    runs = ordered(plan, plan.seed)
    ok, failed, timed_out, aborted, stale = (run.key for run in runs[:5])
    known = [
        info(plan, ok, control_pb2.RUN_STATE_ABORTED),
        info(plan, ok, control_pb2.RUN_STATE_SUCCEEDED, attempt=2),
        info(plan, failed, control_pb2.RUN_STATE_FAILED),
        info(plan, timed_out, control_pb2.RUN_STATE_TIMED_OUT),
        info(plan, aborted, control_pb2.RUN_STATE_ABORTED),
        info(plan, stale, control_pb2.RUN_STATE_RUNNING),
        info(plan, RunKey("gone", "gone", 1, 1), control_pb2.RUN_STATE_SUCCEEDED),
    ]
    state = resume(plan, runs, known, retry_failed=False)
    assert set(state.done) == {ok, failed, timed_out}
    assert state.done[ok].state == control_pb2.RUN_STATE_SUCCEEDED
    assert set(state.redone) == {aborted, stale}
    assert state.attempts[aborted] == 2 and state.attempts[stale] == 2
    assert state.attempts[runs[5].key] == 1
    assert state.foreign == 1
    assert [run.key for run in state.todo(runs)] == [run.key for run in runs[3:]]

    retry = resume(plan, runs, known, retry_failed=True)
    assert set(retry.done) == {ok}
    assert retry.attempts[failed] == 2 and set(retry.redone) == {failed, timed_out, aborted, stale}


def test_report_picks_the_run_standing_for_each_key_as_run_plan_does() -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    runs = ordered(plan, plan.seed)
    retried, failed, aborted = (run.key for run in runs[:3])
    loose = control_pb2.RunInfo(
        spec=control_pb2.RunSpec(run_id="single", runtime_class="runc", replicas=3),
        state=control_pb2.RUN_STATE_TIMED_OUT,
    )
    known = [
        info(plan, retried, control_pb2.RUN_STATE_FAILED),
        info(plan, retried, control_pb2.RUN_STATE_SUCCEEDED, attempt=2),
        info(plan, failed, control_pb2.RUN_STATE_TIMED_OUT),
        info(plan, aborted, control_pb2.RUN_STATE_ABORTED),
        loose,
    ]
    ids = [k.spec.run_id for k in known]
    state = resume(plan, runs, known, retry_failed=False)

    chosen, notes = select_runs(known, include_failed=False)
    assert chosen == [ids[1]]  # the retry alone: its FAILED attempt is not pooled with it
    assert any(ids[0] in n and "stands for it" in n and ids[1] in n for n in notes)
    assert any(ids[2] in n and "single" in n and "--include-failed" in n for n in notes)
    assert any(ids[3] in n and "not finished" in n for n in notes)

    chosen, notes = select_runs(known, include_failed=True)
    # Exactly the runs resumption counts as done for the plan's keys, plus the loose one.
    assert chosen == [ids[1], ids[2], "single"]
    assert {state.done[retried].spec.run_id, state.done[failed].spec.run_id} == set(ids[1:3])
    assert any(ids[0] in n for n in notes) and not any("single" in n for n in notes)


def test_resuming_a_plan_whose_file_changed_is_refused() -> None:
    plan = parse_plan(GOOD, "plan.yaml")
    runs = matrix(plan)
    known = [info(plan, runs[0].key, control_pb2.RUN_STATE_SUCCEEDED, memory="64Mi")]
    with pytest.raises(UsageError, match=r"used memory '64Mi', the plan now says '16Mi'") as caught:
        resume(plan, runs, known, retry_failed=False)
    assert "new id" in str(caught.value)


# -- the command line, without a cluster ---------------------------------------------------------


def rtctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_RTCTL_")}
    # Nothing listens there: a command that tried to connect would fail, not hang.
    env["RTBENCH_RTCTL_COLLECTOR"] = "127.0.0.1:1"
    return subprocess.run(
        [str(BIN / "rtctl"), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_dry_run_prints_the_seeded_order_and_contacts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pi5.yaml"
    path.write_text(GOOD)
    plan = load_plan(path)
    result = rtctl("run-plan", "--dry-run", str(path))
    assert result.returncode == 0, result.stderr
    assert "order seed 11 (from the plan)" in result.stdout
    shown = re.findall(r"pi5-[-a-z0-9]+", result.stdout)
    assert shown == [run_id("pi5", run.key) for run in ordered(plan, 11)]
    other = rtctl("run-plan", "--dry-run", "--seed", "12", str(path))
    assert "order seed 12 (from --seed)" in other.stdout
    assert re.findall(r"pi5-[-a-z0-9]+", other.stdout) == [
        run_id("pi5", run.key) for run in ordered(plan, 12)
    ]


def test_an_invalid_plan_exits_2_with_every_problem_on_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("replicas: [0]\nruntimes:\n  runc: {memory: 16MB}\n")
    result = rtctl("run-plan", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"rtctl: {path} has 2 problems, nothing was run:"
    assert lines[1].startswith(f"{path}:1: replicas[0]: must be at least 1")
    assert lines[2].startswith(f"{path}:3: runtimes.runc.memory: '16MB' is not a Kubernetes")

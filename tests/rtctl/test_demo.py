"""``rtctl demo`` end to end, as a user runs it: its own stack, a tiny plan, the report files."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtctl.demo import (
    REAL_RUNTIMES,
    SIMULATED_RUNTIMES,
    DemoSettings,
    demo_plan_yaml,
    demo_settings,
)
from rtctl.errors import UsageError
from rtctl.plan import parse_plan

BIN = Path(sys.executable).parent
RUNTIMES = ("runc", "kata-fc")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without rtbench settings, as on a fresh machine, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    return {**env, **extra}


def demo_argv() -> list[str]:
    return [str(BIN / "rtctl"), "demo", "--pods", "simulated", "--runtimes", ",".join(RUNTIMES),
            "--replicas", "3", "--repetitions", "1", "--seed", "11", "--settle", "0.5"]  # fmt: skip


def leftovers(out: Path) -> str:
    """Processes still running from the demo's stack (their command lines name its files)."""
    found = subprocess.run(["pgrep", "-af", str(out / "stack")], capture_output=True, text=True)
    return found.stdout


def interrupt_after_first_run(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``rtctl demo`` with SIGINT (Ctrl-C) once its first run succeeded."""
    demo = subprocess.Popen(
        demo_argv(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert demo.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 200
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([demo.stdout], [], [], 1.0)
            line = demo.stdout.readline() if ready else ""
            seen.append(line)
            if "succeeded in" in line:
                demo.send_signal(signal.SIGINT)
                break
            if ready and not line:
                break
        stdout, stderr = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    return subprocess.CompletedProcess(demo.args, demo.returncode, "".join(seen) + stdout, stderr)


def test_the_demo_stops_on_ctrl_c_and_resumes(tmp_path: Path, workload_binary: Path) -> None:
    out = tmp_path / "rtbench-demo"
    # First as on a machine without influxd (nothing but the venv on PATH): journal only.
    stopped = interrupt_after_first_run(tmp_path, clean_env(PATH=str(BIN)))
    assert stopped.returncode == 130, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    assert "InfluxDB: not installed, journal only" in stopped.stdout
    assert "run the same command again to resume" in stopped.stderr
    assert leftovers(out) == ""
    assert not (out / "report.html").exists()

    done = subprocess.run(
        demo_argv(), cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False,
        env=clean_env(RTBENCH_RTCTL_DEMO_NODES="2"), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming: 1 of 2 runs are already in the collector" in done.stdout
    assert f"rtctl demo: report: {out / 'report.html'}" in done.stdout
    # With influxd on PATH (the test suite needs it) it exports, and says so.
    assert "InfluxDB: influxd is installed" in done.stdout
    html = (out / "report.html").read_text()
    for runtime in RUNTIMES:
        assert runtime in html
    report = json.loads((out / "report.json").read_text())
    runs = report["runs"]
    assert sorted(r["spec"]["runtime_class"] for r in runs) == sorted(RUNTIMES)
    assert all(r["state"] == "succeeded" for r in runs), runs
    # Everything the demo shows is simulated, and says so.
    assert report["mode"] == "simulated" and {r["mode"] for r in runs} == {"simulated"}
    assert set(report["runtime_modes"].values()) == {"simulated"}
    assert 'class="mode mode-real"' not in html and "mode mode-simulated" in html
    assert all(len(r["pods"]) == 3 for r in runs)
    for run in runs:
        assert run["run_id"] in html
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "cdf-first_response.png" in pngs
    assert all((out / name).read_bytes().startswith(b"\x89PNG") for name in pngs)
    # The plan it ran is kept, runnable with rtctl run-plan.
    plan = parse_plan((out / "plan.yaml").read_text(), "plan.yaml")
    assert [v.runtime_class for v in plan.variants] == list(RUNTIMES)
    # The stack is gone again; each process logged to its own file.
    assert leftovers(out) == ""
    logs = sorted(p.name for p in (out / "stack" / "logs").glob("*.log"))
    assert logs == ["agent-sim-node-1.log", "agent-sim-node-2.log", "collector.log",
                    "rtbench-sim.log"]  # fmt: skip


def test_bad_demo_settings_are_usage_errors(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "rtctl"), "demo", "--replicas", "3,zero"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "rtctl: --replicas: must be comma-separated counts, got '3,zero'"
    done = subprocess.run(
        [str(BIN / "rtctl"), "demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        env=clean_env(RTBENCH_RTCTL_DEMO_REPETITIONS="0"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "--repetitions must be at least 1" in done.stderr
    assert not (tmp_path / "rtbench-demo").exists(), "nothing is started or written"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--timeout", "nan"], "--timeout: 'nan' is not a duration"),
        (["--timeout", "1e7"], "--timeout: '1e7' is not a duration"),
        (["--settle", "9000h"], "--settle: '9000h' is longer than a week"),
        # Passes the demo's own checks; the plan refuses it: still before DIR exists.
        (["--runtimes", "runc,Not_A_Class"], "Not_A_Class"),
    ],
)
def test_values_refused_late_before_now_leave_no_files(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    done = subprocess.run(
        [str(BIN / "rtctl"), "demo", "--out", "out", *argv],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written before the values are checked"


def test_durations_take_units_and_the_plan_gets_them_back() -> None:
    args = argparse.Namespace(
        timeout_s="5m", settle_s="500ms", pleg_period_s="0.1", runtimes="runc,crun"
    )
    settings = demo_settings(args, {"RTBENCH_RTCTL_DEMO_TIMEOUT": "1h"})
    assert settings.timeout_s == 300 and settings.settle_s == 0.5
    assert (
        demo_settings(argparse.Namespace(), {"RTBENCH_RTCTL_DEMO_TIMEOUT": "1h"}).timeout_s == 3600
    )
    plan = parse_plan(demo_plan_yaml(settings), "demo.yaml")
    assert plan.timeout_s == 300 and plan.settle_s == 0.5
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(UsageError, match="finite duration"):
            DemoSettings(settle_s=bad).check()


def test_the_seed_help_says_the_order_is_fixed_without_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rtctl.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(random)" not in text
    assert "the run order is then seeded by the plan id" in text


@pytest.mark.parametrize(
    "settings",
    [
        DemoSettings(runtimes=SIMULATED_RUNTIMES),
        DemoSettings(runtimes=("crun",), replicas=(5, 10), repetitions=3, seed=4),
    ],
)
def test_the_embedded_plan_is_a_valid_plan(settings: DemoSettings) -> None:
    plan = parse_plan(demo_plan_yaml(settings), "demo.yaml")
    assert [v.runtime_class for v in plan.variants] == list(settings.runtimes)
    assert plan.replicas == settings.replicas
    assert plan.repetitions == settings.repetitions
    assert plan.settle_s == settings.settle_s
    assert plan.baseline == settings.runtimes[0]
    if settings.seed is not None:
        assert plan.seed == settings.seed


def test_the_demo_runs_real_runtimes_where_it_can(tmp_path: Path, workload_binary: Path) -> None:
    """As root with the packages scripts/setup installs, the README's first command
    compares real runc, crun and gVisor pods, and the report says they were real."""
    out = tmp_path / "real-demo"
    done = subprocess.run(
        [str(BIN / "rtctl"), "demo", "--out", str(out), "--replicas", "3", "--repetitions", "1",
         "--settle", "0.5", "--nodes", "1", "--influxdb", "no"],
        cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False,
        env=clean_env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "pods are real containers" in done.stdout
    assert "comparing runc, crun, runsc" in done.stdout
    report = json.loads((out / "report.json").read_text())
    runs = report["runs"]
    assert sorted(r["spec"]["runtime_class"] for r in runs) == ["crun", "runc", "runsc"]
    assert all(r["state"] == "succeeded" for r in runs), runs
    assert report["mode"] == "real"
    assert report["runtime_modes"] == {"runc": "real", "crun": "real", "runsc": "real"}
    html = (out / "report.html").read_text()
    assert 'class="mode mode-real"' in html
    assert 'class="mode mode-simulated"' not in html
    for run in runs:
        for pod in run["pods"]:
            phases = (
                {p["phase"] for p in pod["phases"]}
                if isinstance(pod["phases"], list)
                else set(pod["phases"])
            )
            assert {"sandbox_started", "container_started", "first_response"} <= phases, pod
    assert leftovers(out) == ""


def test_with_real_pods_gvisor_gets_the_memory_its_sandbox_needs() -> None:
    plan = parse_plan(demo_plan_yaml(DemoSettings(runtimes=REAL_RUNTIMES), real=True), "demo.yaml")
    memory = {v.runtime_class: v.memory for v in plan.variants}
    assert memory["runsc"] == "64Mi" and memory["runc"] == memory["crun"] == "16Mi"
    with pytest.raises(UsageError, match="no runtime"):
        demo_plan_yaml(DemoSettings())

"""Exit codes as the README documents them, and quiet ends on a closed pipe (issue 16, 6).

Usage and configuration errors exit 2, operational ones 1: a kubeconfig that
does not exist or a context it lacks is configuration, for rtctl and the agent
alike. A command whose standard output's reader went away (``| head -1``) stops
quietly with 141, as a Unix tool killed by SIGPIPE does: no "[Errno 32] Broken
pipe", no traceback. Every case runs the installed console scripts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import Stack

BIN = Path(sys.executable).parent


def _clean_env(stack: Stack | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    env.pop("NODE_NAME", None)
    env.pop("KUBECONFIG", None)
    return {**env, **(stack.local.rtctl_env() if stack else {})}


def test_a_missing_kubeconfig_or_context_is_a_usage_error(stack: Stack, tmp_path: Path) -> None:
    missing = stack.rtctl("start-run", "--runtime-class", "runc", "--kubeconfig", "/nonexistent")
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.splitlines() == [
        "rtctl: kubeconfig /nonexistent does not exist (give --kubeconfig or set $KUBECONFIG)"
    ]

    context = stack.rtctl("start-run", "--runtime-class", "runc", "--context", "nope")
    assert context.returncode == 2, context.stderr
    (line,) = context.stderr.splitlines()
    assert line.startswith(f"rtctl: kubeconfig {stack.kubeconfig}: ") and "nope" in line

    agent = subprocess.run(
        [str(BIN / "agent"), "run", "--node", stack.nodes[0], "--collector",
         stack.collector_address, "--kubeconfig", "/nonexistent",
         "--state-dir", str(tmp_path / "state"), "--containerd-socket", "off"],
        capture_output=True, text=True, timeout=60, env=_clean_env(), check=False,
    )  # fmt: skip
    assert agent.returncode == 2, agent.stderr
    assert agent.stderr.splitlines() == [
        "agent: error: cannot load the Kubernetes configuration (/nonexistent): no such file"
    ]
    assert not stack.sim("/apis/apps/v1/deployments")["items"]


def test_an_unknown_run_and_an_unknown_test_id_exit_alike(stack: Stack) -> None:
    run = stack.rtctl("report", "no-such-run", "another-one")
    test = stack.rtctl("report", "--test-id", "no-such-test")
    assert (run.returncode, test.returncode) == (2, 2), run.stderr + test.stderr
    assert run.stderr.splitlines() == [
        "rtctl: no run 'no-such-run', 'another-one' in the collector (rtctl runs lists them)"
    ]
    assert len(test.stderr.splitlines()) == 1, test.stderr


def _to_closed_pipe(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """``argv`` with standard output a pipe whose reader is already gone (``| head`` that
    has read its line): every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            argv, stdout=write_end, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=env, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ["rtctl", "agents", "--format", "json"],
        ["rtctl", "agents"],
        ["rtctl", "runs", "--format", "json"],
        ["rtctl", "runs"],
        ["rtctl", "run-plan", "--dry-run", "examples/plan.yaml"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_a_closed_pipe_ends_a_command_quietly(stack: Stack, argv: list[str]) -> None:
    repo = Path(__file__).resolve().parents[2]
    argv = [str(BIN / argv[0]), *[str(repo / a) if a.endswith(".yaml") else a for a in argv[1:]]]
    done = _to_closed_pipe(argv, _clean_env(stack))
    assert done.stderr.decode() == ""
    assert done.returncode == 141

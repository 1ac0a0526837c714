"""``agent run`` on the command line: one line and exit 2 for bad settings, exit 1 at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from tests.agent.test_settings import BAD

AGENT = Path(sys.executable).parent / "agent"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RTBENCH_AGENT_") and k not in ("NODE_NAME", "KUBERNETES_SERVICE_HOST")
    }
    return {**env, **extra}


@pytest.fixture
def no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("RTBENCH_AGENT_") or key == "NODE_NAME":
            monkeypatch.delenv(key)


@pytest.mark.usefixtures("no_agent_env")
@pytest.mark.parametrize(("argv", "env", "message"), BAD)
def test_bad_settings_exit_2_with_one_line(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["run", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("agent: error: ") and message in lines[0]
    assert captured.out == ""


@pytest.mark.usefixtures("no_agent_env")
def test_unknown_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--node", "n", "--no-such-flag"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["agent: error: unrecognized arguments: --no-such-flag"]
    assert main(["run", "--node"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "agent: error: argument --node: expected one argument"
    ]


def test_console_script_refuses_bad_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [AGENT, "run", "--collector", "127.0.0.1:7070"],
        capture_output=True,
        text=True,
        env=clean_env(RTBENCH_AGENT_BATCH_MAX_EVENTS="-3", NODE_NAME="n1"),
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "agent: error: --batch-max-events must be an integer of at least 1, got -3"
    ]


def test_help_lists_every_flag_with_its_environment_variable() -> None:
    result = subprocess.run([AGENT, "run", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in ("--collector", "--token-file", "--tls-ca", "--spool-max-bytes", "--probe-rate"):
        assert flag in result.stdout
    assert "RTBENCH_AGENT_COLLECTOR" in result.stdout
    top = subprocess.run([AGENT, "--help"], capture_output=True, text=True)
    assert top.returncode == 0 and "run" in top.stdout


def _start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENT, "run", "--node", "n1", "--collector", "127.0.0.1:7070", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(HOME=str(tmp_path)),
    )


def test_start_up_failures_exit_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _start(tmp_path, "--state-dir", str(blocker / "state"))
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("agent: error: cannot keep the agent id")
    assert len(result.stderr.splitlines()) == 1, result.stderr

    state = str(tmp_path / "state")
    result = _start(tmp_path, "--state-dir", state, "--tls-ca", str(tmp_path / "none.pem"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"agent: error: cannot read TLS CA file {tmp_path / 'none.pem'}: No such file or directory"
    ]

    # A kubeconfig that is not there is configuration, as a bad flag is (exit 2).
    missing = tmp_path / "no-kubeconfig"
    result = _start(tmp_path, "--state-dir", state, "--kubeconfig", str(missing))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(
        f"agent: error: cannot load the Kubernetes configuration ({missing})"
    )

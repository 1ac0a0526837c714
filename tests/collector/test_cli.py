"""``collector serve`` as a real process: exit codes, one-line errors, ready line, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import grpc

from rtbench.influxd import free_port
from tests.collector.agent_client import TestAgent, make_batch
from tests.collector.conftest import BIN, StartCollector


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "collector"), "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    bad_flag = serve("--no-such-flag")
    assert bad_flag.returncode == 2
    assert one_line(bad_flag) == "collector serve: error: unrecognized arguments: --no-such-flag"
    bad_value = serve("--max-pending-batches", "many")
    assert bad_value.returncode == 2
    assert "must be an integer" in one_line(bad_value)
    wide = serve("--listen", "0.0.0.0:7070", "--journal", str(tmp_path / "j.sqlite"))
    assert wide.returncode == 2
    assert "refusing to listen on non-loopback address 0.0.0.0" in one_line(wide)
    assert not (tmp_path / "j.sqlite").exists()
    bad_env = serve(env={"RTBENCH_COLLECTOR_LISTEN": "nowhere"})
    assert bad_env.returncode == 2
    assert "RTBENCH_COLLECTOR_LISTEN: must be HOST:PORT" in one_line(bad_env)
    combo = serve("--influx-url", "http://127.0.0.1:8086")
    assert combo.returncode == 2
    assert "--influx-api v1 needs --influx-db" in one_line(combo)
    no_journal = serve("--listen", "127.0.0.1:0", "--journal", "")
    assert no_journal.returncode == 2
    assert one_line(no_journal) == "collector serve: error: argument --journal: must not be empty"


def test_operational_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    journal = serve("--listen", "127.0.0.1:0", "--journal", str(tmp_path / "file" / "j.sqlite"))
    assert journal.returncode == 1
    assert "cannot open journal" in one_line(journal)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = serve("--listen", f"127.0.0.1:{port}", "--journal", str(tmp_path / "j.sqlite"))
    assert in_use.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(in_use)


def test_help_lists_every_flag() -> None:
    result = subprocess.run(
        [str(BIN / "collector"), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for flag in ("--listen", "--journal", "--agent-token-file", "--tls-client-ca", "--insecure",
                 "--influx-bucket", "--max-export-backlog", "RTBENCH_COLLECTOR_"):  # fmt: skip
        assert flag in result.stdout
    assert "(67108864 = 64 MiB)" in " ".join(result.stdout.split())


async def test_serve_from_environment_then_sigterm_drains(
    collector_process: StartCollector, tmp_path: Path
) -> None:
    port = free_port()
    proc = collector_process(
        env={
            "RTBENCH_COLLECTOR_LISTEN": f"127.0.0.1:{port}",
            "RTBENCH_COLLECTOR_JOURNAL": str(tmp_path / "env-journal.sqlite"),
        }
    )
    assert proc.listen == f"127.0.0.1:{port}"
    assert proc.journal == tmp_path / "env-journal.sqlite"
    agent = TestAgent(proc.listen, "agent-cli")
    try:
        welcome = await agent.connect()
        assert welcome.collector_id == proc.collector_id
        await agent.send_all([make_batch(s, 10) for s in range(1, 4)])
        proc.process.send_signal(signal.SIGTERM)
        ended = await agent.ended_status()
        assert ended.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await agent.close()
    assert proc.process.wait(60) == 0
    log = proc.stderr()
    assert "journal only" in log
    assert "agent agent-cli connected" in log
    assert "stopped cleanly: 3 batches committed" in log

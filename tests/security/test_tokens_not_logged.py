"""Tokens are never written anywhere: logs, output, journal, spools, InfluxDB, reports.

One real stack (simulated cluster, ``collector serve``, one ``agent run`` per
node, ``rtctl`` as processes, all at debug log level) runs with a recognisable
agent token and a different control token, through what makes a component talk
about its credentials: an agent and rtctl calls presenting a wrong token and a
token one character off the real one (auth failures), a measured run, and a
collector SIGKILLed and restarted (every agent reconnects). Then every byte the
run left behind is searched for each token, whole and in fragments of
``FRAGMENT`` characters (a log that shows "the first 12 characters" leaks too).

``test_scanner_finds_planted_tokens`` plants a token in each kind of place the
big test searches, so a scanner that looks nowhere fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from rtbench.influxd import LocalInfluxd
from rtbench.v1 import control_pb2, control_pb2_grpc
from rtctl.localstack import LocalStack, StackSettings
from rtctl.settings import ConnectionSettings
from tests.security.extra_agent import extra_agent

BIN = Path(sys.executable).parent
FRAGMENT = 12
"""A leak of this many consecutive characters of a token counts (tokens here are 40 long)."""
REPLICAS = 4


@dataclass(frozen=True)
class Leak:
    where: str
    needle: str


def _token(kind: str) -> str:
    return f"rtb{kind}{secrets.token_hex(16)}"


def one_off(token: str) -> str:
    """The token with its last character changed: the near miss a typo makes."""
    return token[:-1] + ("0" if token[-1] != "0" else "1")


def needles(tokens: Iterable[str]) -> list[str]:
    """Each token and each of its FRAGMENT-long substrings."""
    found: set[str] = set()
    for token in tokens:
        found.add(token)
        found.update(token[i : i + FRAGMENT] for i in range(len(token) - FRAGMENT + 1))
    return sorted(found)


def scan_bytes(where: str, data: bytes, wanted: Sequence[str]) -> list[Leak]:
    return [Leak(where, n) for n in wanted if n.encode() in data]


def scan_tree(root: Path, wanted: Sequence[str]) -> list[Leak]:
    """Every regular file under ``root`` (journal, -wal, spools, logs, reports), as bytes."""
    leaks: list[Leak] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):  # a file going away mid-scan
                leaks += scan_bytes(str(path), path.read_bytes(), wanted)
    return leaks


def influx_dump(server: LocalInfluxd, db: str) -> str:
    """Everything InfluxDB holds for ``db``: series keys, field keys, every point."""
    queries = ("SHOW SERIES", "SHOW FIELD KEYS", "SHOW TAG KEYS", "SELECT * FROM /(?s).*/")
    return json.dumps([server.query(q, db=db) for q in queries])


def scan_influx(server: LocalInfluxd, db: str, wanted: Sequence[str]) -> list[Leak]:
    return scan_bytes(f"influxdb {db}", influx_dump(server, db).encode(), wanted)


# -- the scanner can fail ----------------------------------------------------------------


def test_scanner_finds_planted_tokens(tmp_path: Path, influxd: LocalInfluxd) -> None:
    token = _token("plant")
    wanted = needles([token])
    assert scan_tree(tmp_path, wanted) == []
    # A log line showing only part of it.
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "agent.log").write_text(f"connecting with token {token[5:20]}…\n")
    # A journal row still in the write-ahead log (not checkpointed into the main file).
    journal = tmp_path / "journal.sqlite"
    db = sqlite3.connect(journal)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE runs (message TEXT)")
    db.execute("INSERT INTO runs VALUES (?)", (f"bearer {token}",))
    db.commit()
    # A spool file: protobuf bytes around the token.
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "0001.seg").write_bytes(b"\x0a\x2c" + token.encode() + b"\x12\x00")
    leaks = {Path(leak.where).name for leak in scan_tree(tmp_path, wanted)}
    db.close()
    assert leaks == {"agent.log", "journal.sqlite-wal", "0001.seg"}
    assert all(len(n) == FRAGMENT or n == token for n in wanted)
    # A point in InfluxDB.
    database = f"plant_{os.getpid()}"
    influxd.create_database(database)
    assert scan_influx(influxd, database, wanted) == []
    influxd.write(database, f'run,run_id=r message="token {token}" 1')
    assert {leak.needle for leak in scan_influx(influxd, database, wanted)} >= {token}
    influxd.query(f'DROP DATABASE "{database}"')


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    agent: str
    control: str

    @property
    def all(self) -> list[str]:
        return [self.agent, self.control, one_off(self.agent), one_off(self.control), WRONG]


WRONG = _token("wrong")


def rtctl(
    stack: LocalStack, outputs: list[str], *args: str, timeout: float = 240.0
) -> subprocess.CompletedProcess[str]:
    """``rtctl ARGS`` with the stack's connection (control token in the environment); its
    stdout and stderr are kept in ``outputs`` for the scan."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    done = subprocess.run(
        [str(BIN / "rtctl"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, **stack.rtctl_env()},
        cwd=stack.settings.root,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    outputs += [
        f"rtctl {args[0]} stdout:\n{done.stdout}",
        f"rtctl {args[0]} stderr:\n{done.stderr}",
    ]
    return done


def connected_agents(stack: LocalStack, token: str) -> set[str]:
    with grpc.insecure_channel(stack.collector_address) as channel:
        stub = control_pb2_grpc.ControlServiceStub(channel)
        try:
            reply = stub.ListAgents(
                control_pb2.ListAgentsRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
        except grpc.RpcError:
            return set()
    return {a.node for a in reply.agents if a.connected and a.clock.samples > 0}


def wait(condition: Callable[[], bool], what: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(0.2)


def test_tokens_never_written_anywhere(
    tmp_path: Path, influxd: LocalInfluxd, workload_binary: Path
) -> None:
    tokens = Secrets(agent=_token("agent"), control=_token("control"))
    wanted = needles(tokens.all)
    database = f"tokens_{os.getpid()}"
    influxd.create_database(database)
    debug = ("--log-level", "debug")
    settings = StackSettings(
        root=tmp_path / "stack",
        nodes=2,
        seed=5,
        workload=workload_binary,
        pleg_period=0.1,
        influx_url=influxd.url,
        influx_db=database,
        sim_args=debug,
        collector_args=("--agent-token", tokens.agent, "--control-token", tokens.control, *debug),
        agent_args=("--token", tokens.agent, *debug),
        control=ConnectionSettings(token=tokens.control),
    )
    outputs: list[str] = []
    with LocalStack(settings) as stack:
        # Auth failures: an agent one character off, rtctl one character off and wrong.
        with extra_agent(
            stack, "intruder-agent", "--token", one_off(tokens.agent), "--log-level", "debug"
        ) as intruder_log:
            wait(lambda: "refused our token" in intruder_log.read_text(), "the intruder's refusal")
        for bad in (one_off(tokens.control), WRONG, tokens.agent):
            refused = rtctl(stack, outputs, "runs", "--token", bad)
            assert refused.returncode == 1, refused
            assert "UNAUTHENTICATED" in refused.stderr or "token" in refused.stderr, refused
        # A measured run with the right tokens.
        run = rtctl(
            stack, outputs, "start-run", "--runtime-class", "runc", "--replicas", str(REPLICAS),
            "--settle", "0", "--timeout", "120", "--run-id", "tokens-run", "--format", "json",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        # A reconnect: the collector dies and comes back; every agent dials it again.
        stack.kill("collector")
        stack.restart("collector")
        wait(
            lambda: connected_agents(stack, tokens.control) == set(stack.nodes),
            "the agents to reconnect to the restarted collector",
        )
        report = rtctl(
            stack, outputs, "report", "tokens-run", "--out", str(tmp_path / "stack" / "report"),
            "--bootstrap", "50",
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        listed = rtctl(stack, outputs, "runs")
        assert "tokens-run" in listed.stdout
        # While the stack runs: the journal's -wal still holds what was not checkpointed.
        live = scan_tree(stack.settings.root, wanted)
    summary = json.loads(run.stdout)
    assert summary["state"].lower().endswith("succeeded"), summary
    assert (tmp_path / "stack" / "report" / "report.html").exists()
    for name, log in stack.logs.items():
        assert log.stat().st_size > 0, f"{name} logged nothing at debug level"
    leaks = live + scan_tree(stack.settings.root, wanted)
    leaks += scan_bytes("rtctl output", "\n".join(outputs).encode(), wanted)
    leaks += scan_influx(influxd, database, wanted)
    assert influx_dump(influxd, database).count("tokens-run") > 0, "nothing exported to scan"
    influxd.query(f'DROP DATABASE "{database}"')
    assert not leaks, "tokens leaked:\n" + "\n".join(
        sorted({f"{leak.where}: {leak.needle}" for leak in leaks})
    )

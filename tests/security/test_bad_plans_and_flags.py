"""Malformed plan files and bad flags: one clear error, exit 2, never a traceback.

Every command is run as the real console script (what a user types), many at a
time to keep the suite short. A plan is refused with a first line naming the
file and saying nothing was run, then one line per problem; a bad flag with
argparse's one-line usage error or the component's own one line.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plan.yaml"

LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")
LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)

PLANS: dict[str, bytes] = {
    "not-yaml.yaml": b"runtimes: [runc\n  - : : {\n",
    "empty.yaml": b"",
    "only-comment.yaml": b"# nothing here\n",
    "null.yaml": b"~\n",
    "scalar.yaml": b"42\n",
    "list.yaml": b"- runc\n- crun\n",
    "wrong-types.yaml": b"runtimes: 5\nreplicas: ten\nrepetitions: [1]\ntimeout: yes\n",
    "huge-numbers.yaml": b"runtimes: [runc]\nreplicas: [" + b"9" * 5000 + b"]\nrepetitions: 1e400\n"
    b"timeout: 99999999999999999999h\nseed: 1e999\n",
    "negative.yaml": b"runtimes: [runc]\nreplicas: [-1, 0]\nrepetitions: -3\nsettle: -1s\n",
    "unknown-keys.yaml": b"runtimes: [runc]\nreplicas: [1]\nrepetition: 3\nbogus: {a: 1}\n",
    "duplicate-keys.yaml": b"runtimes: [runc]\nreplicas: [1]\nreplicas: [2]\n",
    "billion-laughs.yaml": (LAUGHS + "runtimes: *a9\nreplicas: [1]\n").encode(),
    "self-merge.yaml": b"base: &b {runtimes: [runc]}\n<<: *b\nreplicas: [1]\n",
    "not-utf8.yaml": b"runtimes: [runc]\nreplicas: [1]\ntest_id: \xff\xfe\xc3\x28\n",
    "utf16-bom.yaml": "runtimes: [runc]\n".encode("utf-16"),
    "nul-bytes.yaml": b"runtimes: [ru\x00nc]\nreplicas: [1]\n",
    "deep.yaml": b"runtimes: " + b"[" * 5000 + b"]" * 5000 + b"\nreplicas: [1]\n",
    "bad-labels.yaml": b"runtimes: [runc]\nreplicas: [1]\nlabels: {'bad key!': 'v a l', a: "
    + b"x" * 100
    + b"}\n",
    "bad-memory.yaml": b"runtimes: {runc: {variants: {v: {memory: 16MB}}}}\nreplicas: [1]\n",
}

FLAGS: list[list[str]] = [
    ["collector", "serve", "--listen", "nowhere"],
    ["collector", "serve", "--listen", "127.0.0.1:99999"],
    ["collector", "serve", "--max-batch-events", "-1"],
    ["collector", "serve", "--max-message-bytes", "12"],
    ["collector", "serve", "--shutdown-grace", "nan"],
    ["collector", "serve", "--log-level", "loud"],
    ["collector", "serve", "--tls-cert", "/nonexistent.pem"],
    ["collector", "serve", "--influx-url", "ftp://x"],
    ["collector", "serve", "--bogus"],
    ["collector", "frobnicate"],
    ["agent", "run"],  # no node
    ["agent", "run", "--node", "n", "--collector", "no-port"],
    ["agent", "run", "--node", "n", "--probe-rate", "-5"],
    ["agent", "run", "--node", "n", "--probe-max-interval", "inf"],
    ["agent", "run", "--node", "n", "--bogus"],
    ["rtctl", "start-run", "--replicas", "0"],
    ["rtctl", "start-run", "--replicas", "many"],
    ["rtctl", "start-run", "--timeout", "1e9"],
    ["rtctl", "start-run", "--timeout", "-5s"],
    ["rtctl", "start-run", "--memory", "16MB"],
    ["rtctl", "runs", "--format", "xml"],
    ["rtctl", "agents", "--rpc-timeout", "soon"],
    ["rtctl", "report", "--bootstrap", "0", "r1"],
    ["rtctl", "run-plan"],
    ["rtctl", "run-plan", "--dry-run", "/nonexistent/plan.yaml"],
    ["rtctl", "run-plan", "--dry-run", "--seed", "x", str(EXAMPLE)],
    ["rtctl", "demo", "--replicas", "-1"],
    ["rtctl", "demo", "--repetitions", "nan"],
    ["rtctl", "nope"],
    ["rtbench-sim", "--nodes", "0"],
    ["rtbench-sim", "--nodes", "lots"],
    ["rtbench-sim", "--max-pods", "-1"],
    ["rtbench-sim", "--pleg-period", "inf"],
    ["rtbench-sim", "--profiles", "/nonexistent.yaml"],
    ["rtbench-sim", "--port", "70000"],
    ["rtbench-sim", "--bogus"],
]


async def _run(argv: list[str], cwd: Path) -> tuple[list[str], int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    env["KUBECONFIG"] = str(cwd / "no-kubeconfig")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / argv[0]),
        *argv[1:],
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{argv} did not finish") from None
    assert proc.returncode is not None
    return argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def _run_all(commands: list[list[str]], cwd: Path) -> list[tuple[list[str], int, str, str]]:
    gate = asyncio.Semaphore(4)

    async def one(argv: list[str]) -> tuple[list[str], int, str, str]:
        async with gate:
            return await _run(argv, cwd)

    return list(await asyncio.gather(*(one(argv) for argv in commands)))


async def test_malformed_plans_are_refused_with_their_problems(tmp_path: Path) -> None:
    for name, content in PLANS.items():
        (tmp_path / name).write_bytes(content)
    commands = [["rtctl", "run-plan", "--dry-run", name] for name in PLANS]
    for argv, code, out, err in await _run_all(commands, tmp_path):
        name = argv[-1]
        assert code == 2, (name, code, out, err)
        assert "Traceback" not in err, (name, err)
        lines = err.strip().splitlines()
        assert lines and lines[0].startswith(f"rtctl: {name}"), (name, err)
        # One line per problem, each naming the file and a line, none of them a dump.
        assert all(line.startswith(f"{name}:") for line in lines[1:]), (name, err)
        assert all(len(line) < 400 for line in lines), (name, err)
        assert not out.strip(), (name, out)


async def test_bad_flags_get_one_line_and_exit_2(tmp_path: Path) -> None:
    for argv, code, out, err in await _run_all(FLAGS, tmp_path):
        assert code == 2, (argv, code, out, err)
        assert "Traceback" not in err, (argv, err)
        # argparse prints its usage before the one error line; our own checks print one.
        # Log lines (timestamped) may accompany it: rtbench-sim logs its stop.
        lines = [line for line in err.splitlines() if line.strip() and not LOG.match(line)]
        usage = 0
        if lines and lines[0].startswith("usage:"):
            usage = 1 + next((i for i, line in enumerate(lines[1:]) if line[:1] != " "), 0)
        assert len(lines) - usage == 1, (argv, err)
        assert len(lines[-1]) < 400, (argv, err)

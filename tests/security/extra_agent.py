"""One more ``agent run`` for a local stack's first node, beside the stack's own agents.

The security tests start such an agent with flags of their own (a wrong token, a
foreign CA, ...) to see what the collector does with it and what the agent logs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from rtctl.localstack import LocalStack

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def extra_agent(
    stack: LocalStack, agent_id: str, *flags: str | Path, check_alive: bool = False
) -> Iterator[Path]:
    """Run it with ``flags`` until the block ends; yields its log file. ``check_alive``:
    the block's end asserts it is still running (it must not have given up)."""
    root = stack.settings.root
    log = root / "logs" / f"{agent_id}.log"
    argv = [
        str(BIN / "agent"), "run", "--node", stack.nodes[0], "--agent-id", agent_id,
        "--collector", stack.collector_address, "--kubeconfig", str(stack.kubeconfig),
        "--state-dir", str(root / agent_id), "--containerd-socket", "off",
        "--shutdown-flush", "0.5", *map(str, flags),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_")}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    try:
        yield log
        if check_alive:
            assert proc.poll() is None, f"{agent_id} exited with {proc.returncode}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

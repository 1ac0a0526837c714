"""``rtbench-sim``: run the simulated cluster until SIGTERM or SIGINT.

Settings come from defaults < environment (``RTBENCH_SIM_<FLAG>``, e.g.
``RTBENCH_SIM_NODES=3``) < flags. Once serving it prints exactly one line on
stdout, which scripts and tests parse::

    rtbench-sim ready url=http://127.0.0.1:PORT kubeconfig=PATH nodes=N pods=MODE [containerd=S]

(MODE is ``simulated`` or ``real``; with real pods, S is the socket of the containerd the
agents read) and logs to stderr. SIGTERM or SIGINT stops accepting requests, kills every
workload process and exits 0. Usage errors print one line and exit 2;
operational errors (cannot listen, cannot build the workload, a cluster loop
crashed) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rtbench.cli import parse_positive_int

from .cluster import SimCluster
from .errors import ConfigError, SimError
from .nodes import sim_version
from .settings import SimSettings

PROG = "rtbench-sim"
ENV_PREFIX = "RTBENCH_SIM_"


class UsageError(Exception):
    """A bad flag or environment value (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    if math.isinf(value):
        # An infinite period or timeout is never meant; asyncio would overflow on it.
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


# flag, type, help; the environment variable is RTBENCH_SIM_ + the flag in upper snake case.
_OPTIONS: list[tuple[str, Callable[[str], Any], str]] = [
    ("--nodes", parse_positive_int, "number of simulated nodes, sim-node-1..N (default 2)"),
    (
        "--kubeconfig",
        Path,
        "write a kubeconfig for the cluster here (default STATE_DIR/kubeconfig)",
    ),
    (
        "--listen",
        _listen,
        "HOST:PORT to serve the API on; port 0 picks a free one (default 127.0.0.1:0)",
    ),
    (
        "--max-pods",
        parse_positive_int,
        "allocatable pods per node, the kubelet's --max-pods (default 110)",
    ),
    (
        "--profiles",
        Path,
        "YAML file overriding or adding runtime profiles (default: built-in profiles)",
    ),
    (
        "--workload",
        Path,
        "workload server binary (default: workload/build/server, built with make if missing)",
    ),
    (
        "--state-dir",
        Path,
        "directory for pod logs and the default kubeconfig (default: a temporary one)",
    ),
    ("--seed", _int, "seed for the random delays and names, for repeatable runs (default: random)"),
    (
        "--pleg-period",
        _non_negative_float,
        "seconds between kubelet relists that publish container states; 0 = at once (default 1.0)",
    ),
    (
        "--bookmark-interval",
        _non_negative_float,
        "seconds between watch BOOKMARK events (default 5.0)",
    ),
    (
        "--history-size",
        parse_positive_int,
        "watch events kept for resuming; older resourceVersions get 410 (default 10000)",
    ),
    (
        "--containerd-dir",
        Path,
        "serve containerd's gRPC API (events, containers, tasks) for each node on "
        "DIR/<node>.sock, for `agent run --containerd-socket` (default: off)",
    ),
    (
        "--node-mode",
        str,
        "simulated: pods follow the runtime profiles' delays; real: real containers through "
        "rtbench's own containerd with runc, crun and runsc (needs root, scripts/setup "
        "installs the packages); auto: real where possible, else simulated (default simulated)",
    ),
    ("--log-level", str, "debug, info, warning or error (default info)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Serve a simulated Kubernetes cluster over HTTP on loopback. Its nodes' kubelets run "
            "the real workload server for each pod, on a unique 127.x.y.z address, after delays "
            "drawn from the pod's runtime profile (runc, crun, runsc, kata-*, urunc, youki, "
            "wasmtime); with --node-mode real they start real containers instead, through "
            "rtbench's own containerd (runc, crun, runsc) on a CNI bridge in 198.18.0.0/15. "
            "Every option can also be set in the environment as RTBENCH_SIM_<OPTION>, "
            "e.g. RTBENCH_SIM_NODES=3; flags win."
        ),
    )
    for flag, kind, text in _OPTIONS:
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--version", action="version", version=f"{PROG} (rtbench) {sim_version()}")
    return parser


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[SimSettings, Path | None, str]:
    """Settings, kubeconfig path and log level from flags over environment over defaults."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    values: dict[str, Any] = {}
    for flag, kind, _ in _OPTIONS:
        dest = flag[2:].replace("-", "_")
        value = getattr(args, dest)
        if value is None:
            env = ENV_PREFIX + dest.upper()
            raw = environ.get(env)
            if raw is not None and raw != "":
                try:
                    value = kind(raw)
                except argparse.ArgumentTypeError as exc:
                    raise UsageError(f"{env}: {exc}") from None
        values[dest] = value
    level = str(values.pop("log_level") or "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise UsageError(f"--log-level must be debug, info, warning or error, got {level!r}")
    kubeconfig = values.pop("kubeconfig")
    listen = values.pop("listen")
    renames = {"profiles": "profiles_file"}
    fields = {renames.get(k, k): v for k, v in values.items() if v is not None}
    if listen is not None:
        fields["host"], fields["port"] = listen
    settings = SimSettings(**fields)
    try:
        settings.check()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return settings, kubeconfig, level


async def serve(settings: SimSettings, kubeconfig: Path | None) -> int:
    cluster = SimCluster(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await cluster.start()
        assert cluster.state_dir is not None
        path = cluster.write_kubeconfig(kubeconfig or cluster.state_dir / "kubeconfig")
        real = f" containerd={cluster.real_socket}" if cluster.real_socket else ""
        print(
            f"{PROG} ready url={cluster.url} kubeconfig={path} nodes={settings.nodes} "
            f"pods={cluster.node_mode}{real}",
            flush=True,
        )
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(cluster.wait_failed())
        await asyncio.wait([stopping, failing], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        failing.cancel()
        if not stop.is_set():
            raise SimError(f"cluster failed: {cluster.problem}")
        logging.getLogger(__name__).info("signal received, stopping")
        return 0
    finally:
        await cluster.stop()


def main(argv: Sequence[str] | None = None) -> NoReturn:
    try:
        settings, kubeconfig, level = parse(sys.argv[1:] if argv is None else argv, os.environ)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = asyncio.run(serve(settings, kubeconfig))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except SimError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)

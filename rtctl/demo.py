"""``rtctl demo``: the README's first command, the whole job on one machine in a few minutes.

A newcomer should see what rtbench is for before reading how: this starts the
local stack (``rtctl.localstack``: the embedded 2-node cluster, one agent per
node, the collector; InfluxDB too when the machine has ``influxd``), runs a
small embedded plan through the same runner as ``rtctl run-plan``, writes the
same report as ``rtctl report --out`` and says where it is. Nothing is
special-cased for the demo: the plan is written next to the report
(``DIR/plan.yaml``) and can be run as it is against a real cluster.

What it compares depends on the machine (``--pods auto``): as root with
containerd and runc, the cluster's pods are real containers (rtbench's own
containerd, ``rtbench-sim --node-mode real``) and the plan compares real runc,
crun and gVisor (runsc); elsewhere the pods follow the simulator's runtime
profiles (runc, crun, runsc, kata-qemu, kata-fc) and the demo says why. The
report marks every runtime real or simulated.

Everything lands in ``DIR`` (default ``./rtbench-demo``): the report, the plan,
and the stack's journal, logs and agent spools under ``DIR/stack``. The
journal is kept, so an interrupted demo resumes where it stopped when run again
with the same ``--out`` (delete DIR for a fresh start).

Settings: defaults < environment (``RTBENCH_RTCTL_DEMO_<FLAG>``, e.g.
``RTBENCH_RTCTL_DEMO_REPLICAS=5``) < flags.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from rtbench.cli import EXIT_FAILED, EXIT_OK

from . import cliargs
from .cliargs import format_duration, parse_duration
from .errors import UsageError
from .localstack import LocalStack, StackSettings
from .plan import parse_plan
from .plancli import run_plan
from .reportcli import write_report

__all__ = ["DemoSettings", "add_parser", "demo_plan_yaml", "run"]

ENV_PREFIX = "RTBENCH_RTCTL_DEMO_"
REAL_RUNTIMES = ("runc", "crun", "runsc")
"""The real runtimes the demo compares: runc, the faster crun and gVisor."""
SIMULATED_RUNTIMES = ("runc", "crun", "runsc", "kata-qemu", "kata-fc")
"""A container runtime, a faster one, gVisor and two Kata VMMs: the contrasts the
studies in DESIGN.md report, in profiles the simulator has."""


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("rtbench-demo")
    """Relative to where the demo is run, so the report is easy to find afterwards."""
    nodes: int = 2
    """The issue's demo cluster: the smallest where pods spread over nodes."""
    pods: str = "auto"
    """real: real containers through rtbench's own containerd (root, containerd, runc);
    simulated: the simulator's runtime profiles; auto: real where this machine can, else
    simulated, saying why."""
    runtimes: tuple[str, ...] = ()
    """Empty: by what the pods are. Real: ``REAL_RUNTIMES`` this machine can run;
    simulated: ``SIMULATED_RUNTIMES``."""
    replicas: tuple[int, ...] = (20,)
    """Enough pods for percentiles to mean something, few enough for 2 cores."""
    repetitions: int = 3
    """Three give a median and a spread per runtime (the box plot) and keep the whole demo
    near a minute and a half on 2 cores."""
    seed: int | None = None
    """Seeds the simulator's delays and the run order; None: random delays, and the order
    the plan's id seeds (crc32 of "demo"), the same every time."""
    pleg_period_s: float = 1.0
    """How soon the simulated kubelet publishes container states and pod IPs: a real
    kubelet's 1 s relist, so running and ready come as late as on a real node. The
    agents learn each pod's IP from the node's containerd socket (CRI) as its sandbox
    starts, so first_response does not wait for the relist."""
    influxdb: str = "auto"
    """auto: export to a private InfluxDB when ``influxd`` is installed, else journal only;
    yes: require it; no: journal only."""
    settle_s: float = 2.0
    """Pause between runs once every pod is gone; the simulator needs no cool-down, a
    real node would (the plan default is 5 s)."""
    timeout_s: float = 180.0
    """Per run; the slowest profile's 20 pods start in seconds, so only a broken run
    takes this long."""

    def check(self) -> None:
        """UsageError for values the demo cannot run with (no I/O)."""
        if not 1 <= self.nodes <= 20:
            raise UsageError(f"--nodes must be between 1 and 20, got {self.nodes}")
        if self.pods not in ("auto", "real", "simulated"):
            raise UsageError(f"--pods must be auto, real or simulated, got {self.pods!r}")
        if not self.replicas or min(self.replicas) < 1:
            raise UsageError("--replicas must be positive counts, e.g. 20 or 10,30")
        if self.repetitions < 1:
            raise UsageError(f"--repetitions must be at least 1, got {self.repetitions}")
        if self.influxdb not in ("auto", "yes", "no"):
            raise UsageError(f"--influxdb must be auto, yes or no, got {self.influxdb!r}")
        for flag, value in (
            ("--settle", self.settle_s),
            ("--pleg-period", self.pleg_period_s),
            ("--timeout", self.timeout_s),
        ):
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{flag} must be a finite duration >= 0, got {value}")
        if self.timeout_s <= 0:
            raise UsageError(f"--timeout must be positive, got {self.timeout_s}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(text))
    except ValueError:
        raise ValueError(f"must be comma-separated counts, got {text!r}") from None


# field: (parser, help); the flag is --field (--settle, --timeout for the *_s ones) and
# the environment variable RTBENCH_RTCTL_DEMO_ + the flag in upper snake case.
_OPTIONS: dict[str, tuple[Callable[[str], Any], str, str]] = {
    "out": (Path, "DIR", "directory for the report, the plan and the stack's files"),
    "nodes": (int, "N", "simulated nodes, one agent each"),
    "pods": (str, "MODE", "auto, real or simulated: real containers or runtime profiles"),
    "runtimes": (
        _names,
        "LIST",
        "comma-separated runtime classes (default: runc,crun,runsc with real pods, "
        "runc,crun,runsc,kata-qemu,kata-fc simulated)",
    ),
    "replicas": (_counts, "LIST", "comma-separated replica counts"),
    "repetitions": (int, "N", "runs of each runtime x replica count"),
    "seed": (int, "N", "seed of the simulator's delays and of the run order"),
    "pleg_period_s": (parse_duration, "DURATION", "simulated kubelet relist period (real: 1s)"),
    "influxdb": (str, "MODE", "auto, yes or no: export to a private InfluxDB"),
    "settle_s": (parse_duration, "DURATION", "wait between runs once the pods are gone"),
    "timeout_s": (parse_duration, "DURATION", "time a run may take until every pod answered"),
}
DESCRIPTION = (
    "Start the embedded Kubernetes cluster, an agent per node and the collector on this "
    "machine (plus a private InfluxDB when influxd is installed), run a small plan over "
    "real runc, crun and gVisor pods where this machine can (root, containerd; else over "
    "the simulator's runtime profiles, saying why), write the report (HTML, PNG figures, "
    "JSON) and stop again. "
    "DIR/plan.yaml is the plan, runnable on a real cluster with `rtctl run-plan`; the "
    "stack's journal and logs stay in DIR/stack, so running the demo again with the same "
    "--out resumes an interrupted one (delete DIR for a fresh start). Every flag can also "
    "be set as RTBENCH_RTCTL_DEMO_<FLAG>; flags win."
)


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


def _env(name: str) -> str:
    return ENV_PREFIX + _flag(name)[2:].replace("-", "_").upper()


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a small benchmark on the local embedded cluster and write a report",
        description=DESCRIPTION,
    )
    defaults = {f.name: f.default for f in fields(DemoSettings)}
    for name, (_, metavar, text) in _OPTIONS.items():
        default = defaults[name]
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if name == "seed":
            text += " (default: random delays; the run order is then seeded by the plan id)"
        elif name == "runtimes":
            pass
        else:
            text += f" (default {shown})"
        parser.add_argument(_flag(name), dest=name, metavar=metavar, default=None, help=text)
    parser.set_defaults(func=run)


def demo_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> DemoSettings:
    """Flags over RTBENCH_RTCTL_DEMO_* over the defaults; UsageError on bad values."""
    values: dict[str, Any] = {}
    for name, (parse, _, _) in _OPTIONS.items():
        env = _env(name)
        raw, where = getattr(args, name, None), _flag(name)
        if raw is None and environ.get(env):
            raw, where = environ[env], env
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
    settings = DemoSettings(**values)
    settings.check()
    return settings


def demo_runtimes(
    settings: DemoSettings, pods: str, handlers: Mapping[str, str]
) -> tuple[str, ...]:
    """The runtimes to compare: the user's, else the defaults for real or simulated pods
    (real: those of ``REAL_RUNTIMES`` whose handler is ``available`` here)."""
    if settings.runtimes:
        return settings.runtimes
    if pods == "real":
        return tuple(r for r in REAL_RUNTIMES if handlers.get(r) == "available")
    return SIMULATED_RUNTIMES


REAL_MEMORY = {"runsc": "64Mi"}
"""Memory limits for real runtimes that need more than the workload's 16Mi: gVisor charges
its sandbox (about 18 MiB here) to the pod's cgroup, and a real runsc pod under 32Mi fails
to start. The others keep the plan default."""


def demo_plan_yaml(settings: DemoSettings, *, real: bool = False) -> str:
    """The embedded plan, as a commented plan file (rtctl run-plan runs it unchanged);
    ``real``: for real runtimes (``REAL_MEMORY``)."""
    if not settings.runtimes:
        raise UsageError("the demo has no runtime to compare")
    plan = {
        "plan": "demo",
        "test_id": "demo",
        "replicas": list(settings.replicas),
        "repetitions": settings.repetitions,
        "timeout": format_duration(settings.timeout_s),
        "settle": format_duration(settings.settle_s),
        "baseline": settings.runtimes[0],
        "runtimes": {
            r: ({"memory": REAL_MEMORY[r]} if real and r in REAL_MEMORY else None)
            for r in settings.runtimes
        },
    }
    if settings.seed is not None:
        plan["seed"] = settings.seed
    head = (
        "# The plan `rtctl demo` ran (see README: rtctl run-plan for every key).\n"
        "# Run it on any cluster with agents and a collector: rtctl run-plan plan.yaml\n"
    )
    return head + yaml.safe_dump(plan, sort_keys=False).replace(": null\n", ":\n")


def _influxdb(settings: DemoSettings) -> bool:
    found = shutil.which("influxd") is not None
    if settings.influxdb == "yes" and not found:
        raise UsageError("--influxdb yes: influxd is not installed (apt-get install influxdb)")
    return found and settings.influxdb != "no"


async def run(args: argparse.Namespace) -> int:
    settings = demo_settings(args, os.environ)
    # Everything that can be refused is checked before DIR or a file in it is made (the
    # runtimes are only known once the cluster says what its pods are: check with the
    # simulated defaults, the largest set).
    out = settings.out.resolve()
    plan_path = out / "plan.yaml"
    parse_plan(
        demo_plan_yaml(replace(settings, runtimes=settings.runtimes or SIMULATED_RUNTIMES)),
        str(plan_path),
    )
    influx = _influxdb(settings)
    console = cliargs.console()

    def say(text: str) -> None:
        console.print(f"rtctl demo: {text}", highlight=False, soft_wrap=True)

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    root = out / "stack"
    say(f"writing to {out} (the stack's journal and logs in {root})")
    say(
        "InfluxDB: influxd is installed, the collector exports to a private one"
        f" (database rtbench, data in {root / 'influxd'})"
        if influx
        else f"InfluxDB: {'not installed' if settings.influxdb == 'auto' else 'off'},"
        f" journal only ({root / 'journal.sqlite'})"
    )
    stack_settings = StackSettings(
        root=root,
        nodes=settings.nodes,
        seed=settings.seed,
        pleg_period=settings.pleg_period_s,
        start_influxd=influx,
        pods=settings.pods,
        # The agents keep their default sampling: memory per pod takes its "before" from the
        # sample at first sight of a run's pod and its "after" from the one each ready
        # triggers (collector/summaries.py), so a short settle needs no faster sampling.
    )
    wanted = {
        "auto": "real pods where possible",
        "real": "real pods",
        "simulated": "simulated pods",
    }
    say(
        f"starting the local stack: embedded cluster ({settings.nodes} nodes, "
        f"{wanted[settings.pods]}), collector, agents"
    )
    async with LocalStack(stack_settings, progress=say) as stack:
        if stack.pods == "real":
            say(f"pods are real containers (containerd {stack.real_containerd})")
            for handler, why in sorted(stack.real_handlers.items()):
                if why != "available":
                    say(f"  {handler}: not available here ({why})")
        else:
            why = f": {stack.real_unavailable}" if stack.real_unavailable else ""
            say(f"pods are simulated (runtime profiles){why}")
        runtimes = demo_runtimes(settings, stack.pods, stack.real_handlers)
        plan_text = demo_plan_yaml(replace(settings, runtimes=runtimes), real=stack.pods == "real")
        plan = parse_plan(plan_text, str(plan_path))
        plan_path.write_text(plan_text, encoding="utf-8")
        say(f"comparing {', '.join(runtimes)}; the plan: {plan_path}")
        outcome, report = await run_plan(plan, stack.connection(), console)
        say("writing the report (HTML, PNG figures, JSON)")
        paths = await asyncio.to_thread(write_report, report, out)
        say("stopping the local stack")
    say(f"report: {paths[0]}")
    say(f"also: {', '.join(p.name for p in paths[1:])} in {out}; the plan: {plan_path}")
    return EXIT_OK if outcome.succeeded else EXIT_FAILED

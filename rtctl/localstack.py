"""The whole measuring stack on one machine, as separate processes: for the demo and the tests.

``rtctl demo`` and the rtctl tests need what a user would run by hand: the
simulated cluster (``rtbench-sim``), the collector (``collector serve``) and one
agent per node (``agent run``), each its own process started from the console
scripts next to ``sys.executable``, talking real HTTP and gRPC on loopback. This
module starts them in that order, waits until each is really usable (the sim's and
the collector's ready lines, then every node's agent connected to the collector
with a clock estimate, seen through the control API), and stops them in the
reverse order with SIGTERM, SIGKILL after a grace period, checking exit codes and
that no workload process of the simulator outlives it.

So that runs on it measure what they would on real nodes, each simulated node
serves a containerd socket (sandbox and container phases) when the installed
simulator and agent support it, and each agent reads its node's simulated
memory through a mirrored /proc (``rtctl.simproc``) rather than the host's.

Each process logs to ``ROOT/logs/<name>.log``; when one fails the error names that
file and carries its last lines (``rtctl.localprocs`` handles single processes).
Environment variables that configure the components (``RTBENCH_SIM_*``,
``RTBENCH_COLLECTOR_*``, ``RTBENCH_AGENT_*``) are not passed on: the stack is
defined by its settings alone.

Errors: ``StackError`` (from ``rtctl.localprocs``; a ``ClusterError``, exit 1) for
anything that fails while starting, running or stopping the stack.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import json
import logging
import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from rtbench.grpcsecurity import read_token_file
from rtbench.influxd import InfluxdError, LocalInfluxd
from rtbench.v1 import control_pb2, control_pb2_grpc
from rtctl.localprocs import StackError, StackProcess, child_pids, reap, spawn, stop_group, supports
from rtctl.settings import ConnectionSettings
from rtctl.simproc import ProcMirror

__all__ = ["LocalStack", "StackError", "StackSettings"]

log = logging.getLogger(__name__)

SIM_READY = re.compile(
    r"^rtbench-sim ready url=(\S+) kubeconfig=(\S+) nodes=(\d+)"
    r"(?: pods=(\w+))?(?: containerd=(\S+))?$",
    re.M,
)
COLLECTOR_READY = re.compile(
    r"^collector ready listen=(\S+) journal=(\S+) collector_id=(\w+)$", re.M
)
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin for the node name


@dataclass(frozen=True)
class StackSettings:
    root: Path
    """Everything the stack writes goes here (journal, logs, kubeconfig, agent spools), so a
    failed demo or test can be inspected afterwards; no default, the caller owns the place."""
    nodes: int = 2
    """Two nodes, as in the issue's demo: the smallest cluster where spreading shows."""
    seed: int | None = None
    """The simulator's delay seed; None is random, as real clusters are."""
    max_pods: int | None = None
    """Allocatable pods per node; None keeps the simulator's (and the kubelet's) 110."""
    profiles: Path | None = None
    """Runtime profiles YAML for the simulator; None uses its built-in profiles."""
    workload: Path | None = None
    """The workload binary; None lets the simulator find (and build) workload/build/server."""
    pleg_period: float | None = None
    """Kubelet relist period; None keeps the simulator's realistic 1 s."""
    influx_url: str | None = None
    """InfluxDB the collector exports to; None is journal only (the embedded default)."""
    influx_db: str = "rtbench"
    """Database for ``influx_url`` or ``start_influxd``; the name the dashboards expect."""
    start_influxd: bool = False
    """Run a private InfluxDB (Debian's influxd) under ROOT/influxd; off unless asked, since
    a machine may not have one."""
    sim_meminfo: bool = True
    """Agents read each simulated node's memory (the simulator's meminfo, mirrored under
    ROOT/proc by ``rtctl.simproc``) rather than the shared host's, so memory per pod shows
    the runtime profiles' footprints instead of the host's noise."""
    containerd: bool | None = None
    """Serve a containerd socket per node and let the agents read it (sandbox and container
    phases). None: when both the simulator and the agent support it; True: required."""
    pods: str | None = None
    """``rtbench-sim --node-mode``: simulated, real (real containers through rtbench's own
    containerd; needs root) or auto (real where this machine can). None keeps the
    simulator's default, simulated."""
    start_timeout: float = 120.0
    """Seconds to wait for each step of the start; generous, since 2 busy cores may start
    a Python process slowly."""
    stop_grace: float = 30.0
    """Seconds a process gets to exit after SIGTERM before SIGKILL; an agent flushes its
    spool and the collector drains its queue in this time."""
    sim_args: tuple[str, ...] = ()
    """Extra ``rtbench-sim`` flags, for tests and experiments."""
    collector_args: tuple[str, ...] = ()
    """Extra ``collector serve`` flags."""
    agent_args: tuple[str, ...] = ()
    """Extra ``agent run`` flags, given to every agent."""
    control: ConnectionSettings | None = None
    """How the stack's own control calls and ``rtctl_env()``/``connection()`` reach a collector
    given a control token or TLS in ``collector_args``: its token and TLS fields are used, its
    collector and kubeconfig are replaced by the stack's. None: plaintext without a token,
    which is how the stack's collector runs unless told otherwise."""


class LocalStack:
    """Simulated cluster + collector + one agent per node, as processes.

    ``with LocalStack(settings) as stack:`` (or ``async with``, which starts and
    stops in a thread) gives ``collector_address``, ``kubeconfig``, ``journal``,
    ``nodes`` and ``rtctl_env()``. ``progress`` hears what the stack is waiting for.
    """

    def __init__(
        self, settings: StackSettings, progress: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self._progress = progress or (lambda text: log.info("%s", text))
        self._processes: list[StackProcess] = []
        self._cancel = threading.Event()
        self._ctd_dir: Path | None = None
        self._own_ctd_dir = False
        self._influxd: LocalInfluxd | None = None
        self._mirror: ProcMirror | None = None
        self.sim_url = ""
        self.kubeconfig = Path()
        self.collector_address = ""
        self.journal = Path()
        self.collector_id = ""
        self.nodes: tuple[str, ...] = ()
        self.pods = "simulated"
        """What the cluster's pods are: ``real`` containers or ``simulated`` ones."""
        self.real_containerd: Path | None = None
        """The real containerd's socket the agents read, when pods are real."""
        self.real_unavailable: str | None = None
        """Why ``pods="auto"`` gave simulated pods (the simulator's reason)."""
        self.real_handlers: dict[str, str] = {}
        """With real pods: each runtime handler, ``available`` or why it is not."""
        self.influx_url: str | None = settings.influx_url
        self.pids: dict[str, int] = {}
        """Every process the stack started, by name (kept after stop, for checks)."""
        self.logs: dict[str, Path] = {}
        """Each process's log file, by name."""
        self.exit_codes: dict[str, int] = {}
        """How each process ended, filled in by stop()."""
        self.workload_pids: dict[int, str] = {}
        """The simulator's workload processes when it was stopped (pid → start time)."""

    # -- what users of a running stack need -------------------------------------------

    @property
    def influx_db(self) -> str | None:
        return self.settings.influx_db if self.influx_url else None

    @property
    def containerd_dir(self) -> Path | None:
        """Where the simulator's per-node containerd sockets are, when they are served."""
        return self._ctd_dir

    def rtctl_env(self) -> dict[str, str]:
        """The environment that points ``rtctl`` at this stack (with ``settings.control``'s
        token and TLS files, when given)."""
        env = {
            "RTBENCH_RTCTL_COLLECTOR": self.collector_address,
            "RTBENCH_RTCTL_KUBECONFIG": str(self.kubeconfig),
        }
        control = self.settings.control
        if control is not None:
            for name in ("token", "token_file", "tls_ca", "tls_cert", "tls_key", "tls_server_name"):
                value = getattr(control, name)
                if value is not None:
                    env[f"RTBENCH_RTCTL_{name.upper()}"] = str(value)
        return env

    def connection(self) -> ConnectionSettings:
        """The same connection for rtctl code running in this process (the demo)."""
        if self.settings.control is None:
            return ConnectionSettings(collector=self.collector_address, kubeconfig=self.kubeconfig)
        return dataclasses.replace(
            self.settings.control, collector=self.collector_address, kubeconfig=self.kubeconfig
        )

    def check(self) -> None:
        """Raise StackError when a stack process has exited on its own."""
        for proc in self._processes:
            code = proc.popen.poll()
            if code is not None:
                raise proc.failure(f"exited with {code} while the stack was running")

    # -- start -----------------------------------------------------------------------

    def start(self) -> None:
        """Start everything and wait until it is usable; on failure stop what started."""
        try:
            self._start()
        except BaseException:
            self.stop(strict=False)
            raise

    def _start(self) -> None:
        s = self.settings
        # The processes have their own process group, so nothing else would stop them if
        # the owner forgot to or died of an exception: stop them when the interpreter exits.
        atexit.register(self._stop_quietly)
        (s.root / "logs").mkdir(parents=True, exist_ok=True)
        if s.start_influxd and self.influx_url is None:
            self._start_influxd()
        sim_argv = ["--nodes", str(s.nodes), "--state-dir", str(s.root / "sim")]
        sim_argv += ["--kubeconfig", str(s.root / "kubeconfig")]
        for flag, value in (
            ("--seed", s.seed),
            ("--max-pods", s.max_pods),
            ("--profiles", s.profiles),
            ("--workload", s.workload),
            ("--pleg-period", s.pleg_period),
            ("--node-mode", s.pods),
        ):
            if value is not None:
                sim_argv += [flag, str(value)]
        if self._use_containerd():
            self._ctd_dir = self._containerd_dir()
            sim_argv += ["--containerd-dir", str(self._ctd_dir)]
        collector_argv = ["serve", "--listen", "127.0.0.1:0"]
        collector_argv += ["--journal", str(s.root / "journal.sqlite")]
        if self.influx_url is not None:
            collector_argv += ["--influx-url", self.influx_url, "--influx-db", s.influx_db]
        # The simulator and the collector do not need each other: start both, then wait.
        sim = self._spawn("rtbench-sim", [*sim_argv, *s.sim_args])
        collector = self._spawn("collector", [*collector_argv, *s.collector_args])
        self._progress(f"waiting for the simulated cluster ({s.nodes} nodes)")
        ready = self._wait_line(sim, SIM_READY)
        self.sim_url, self.kubeconfig = ready[1], Path(ready[2])
        self.pods = ready[4] or "simulated"
        self.real_containerd = Path(ready[5]) if ready[5] else None
        if self.pods == "real":
            handlers = self._sim_state().get("handlers") or {}
            self.real_handlers = {str(k): str(v) for k, v in handlers.items()}
        elif s.pods == "auto":
            self.real_unavailable = self._sim_state().get("realUnavailable")
        self._progress("waiting for the collector")
        ready = self._wait_line(collector, COLLECTOR_READY)
        self.collector_address, self.journal, self.collector_id = ready[1], Path(ready[2]), ready[3]
        try:
            self.nodes = self._node_names()
        except (OSError, ValueError, KeyError) as exc:
            raise sim.failure(f"did not list its nodes at {self.sim_url} ({exc})") from exc
        if s.sim_meminfo:
            self._mirror = ProcMirror(self.sim_url, self.nodes, s.root / "proc")
            try:
                self._mirror.start()
            except OSError as exc:
                raise sim.failure(f"did not serve its nodes' meminfo ({exc})") from exc
        for node in self.nodes:
            argv = ["run", "--node", node, "--collector", self.collector_address]
            argv += ["--kubeconfig", str(self.kubeconfig)]
            argv += ["--state-dir", str(s.root / f"agent-{node}")]
            if self._mirror is not None:
                argv += ["--proc-root", str(self._mirror.proc_root(node))]
            if self.real_containerd is not None:
                # Real pods: every node's agent reads rtbench's one containerd, as an
                # agent on K3s reads its node's; each keeps the pods bound to its node.
                argv += ["--containerd-socket", str(self.real_containerd)]
            elif self._ctd_dir is not None:
                argv += ["--containerd-socket", str(self._ctd_dir / f"{node}.sock")]
            elif supports("agent", "run", "--containerd-socket"):
                # Left alone, an agent finds this machine's own containerd, if any, and
                # would report its containers as the simulated node's.
                argv += ["--containerd-socket", "off"]
            self._spawn(f"agent-{node}", [*argv, *s.agent_args], program="agent")
        self._wait_agents()
        export = (
            f"InfluxDB {self.influx_url} db {s.influx_db}" if self.influx_url else "journal only"
        )
        self._progress(f"stack ready: {len(self.nodes)} nodes, {self.collector_address}, {export}")

    def _start_influxd(self) -> None:
        self._progress("starting InfluxDB")
        try:
            server = LocalInfluxd(root=self.settings.root / "influxd")
            server.start(timeout=self.settings.start_timeout)
            server.create_database(self.settings.influx_db)
        except InfluxdError as exc:
            raise StackError(f"InfluxDB: {exc}") from exc
        self._influxd = server
        self.influx_url = server.url

    def _use_containerd(self) -> bool:
        wanted = self.settings.containerd
        if wanted is False:
            return False
        both = supports("rtbench-sim", "", "--containerd-dir") and supports(
            "agent", "run", "--containerd-socket"
        )
        if wanted and not both:
            raise StackError(
                "containerd sockets asked for, but rtbench-sim --containerd-dir or "
                "agent run --containerd-socket is not installed"
            )
        return both

    def _containerd_dir(self) -> Path:
        path = self.settings.root / "containerd"
        if len(str(path / f"sim-node-{self.settings.nodes}.sock")) > SOCKET_PATH_MAX:
            # Unix socket paths are short; deep test directories do not fit.
            self._own_ctd_dir = True
            return Path(tempfile.mkdtemp(prefix="rtbench-ctd-"))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, args: list[str], program: str | None = None) -> StackProcess:
        proc = spawn(name, program or name, args, self.settings.root / "logs")
        self._processes.append(proc)
        self.pids[name], self.logs[name] = proc.popen.pid, proc.log
        log.debug("started %s (pid %d): %s", name, proc.popen.pid, " ".join(proc.argv))
        return proc

    def _wait_line(self, proc: StackProcess, pattern: re.Pattern[str]) -> re.Match[str]:
        return proc.wait_line(pattern, self.settings.start_timeout, self._cancel.is_set)

    def _sim_state(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.sim_url + "/_sim/state", timeout=30) as reply:
                state = json.loads(reply.read())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _node_names(self) -> tuple[str, ...]:
        with urllib.request.urlopen(self.sim_url + "/api/v1/nodes", timeout=30) as reply:
            items = json.loads(reply.read())["items"]
        return tuple(sorted(item["metadata"]["name"] for item in items))

    def _wait_agents(self) -> None:
        deadline = time.monotonic() + self.settings.start_timeout
        waiting = set(self.nodes)
        channel, metadata = self._control_channel()
        with channel:
            stub = control_pb2_grpc.ControlServiceStub(channel)
            shown: set[str] = set()
            while True:
                for proc in self._processes:
                    if proc.popen.poll() is not None:
                        raise proc.failure(f"exited with {proc.popen.returncode} while starting")
                try:
                    agents = stub.ListAgents(
                        control_pb2.ListAgentsRequest(), timeout=10, metadata=metadata
                    ).agents
                except grpc.RpcError as exc:
                    raise StackError(f"collector ListAgents failed: {exc.details()}") from exc
                ready = {a.node for a in agents if a.connected and a.clock.samples > 0}
                waiting = set(self.nodes) - ready
                if not waiting:
                    return
                if waiting != shown:
                    self._progress(
                        "waiting for agents to connect with a clock estimate: "
                        + ", ".join(sorted(waiting))
                    )
                    shown = waiting
                if self._cancel.is_set():
                    raise StackError("start cancelled while waiting for the agents")
                if time.monotonic() > deadline:
                    node = sorted(waiting)[0]
                    agent = next(p for p in self._processes if p.name == f"agent-{node}")
                    raise agent.failure(
                        f"not connected with a clock estimate within "
                        f"{self.settings.start_timeout:.0f} s"
                    )
                time.sleep(0.1)

    def _control_channel(self) -> tuple[grpc.Channel, tuple[tuple[str, str], ...]]:
        """A blocking channel to the collector and the call metadata, per ``settings.control``."""
        control = self.settings.control
        if control is None:
            return grpc.insecure_channel(self.collector_address), ()
        token = control.token
        try:
            if control.token_file is not None:
                token = read_token_file(control.token_file)
            credentials = None
            if control.tls_ca is not None:
                key = cert = None
                if control.tls_key is not None and control.tls_cert is not None:
                    key, cert = control.tls_key.read_bytes(), control.tls_cert.read_bytes()
                credentials = grpc.ssl_channel_credentials(control.tls_ca.read_bytes(), key, cert)
        except (OSError, ValueError) as exc:
            raise StackError(f"control connection settings: {exc}") from exc
        metadata = () if token is None else (("authorization", f"Bearer {token}"),)
        if credentials is None:
            return grpc.insecure_channel(self.collector_address), metadata
        options = []
        if control.tls_server_name is not None:
            options.append(("grpc.ssl_target_name_override", control.tls_server_name))
        return grpc.secure_channel(self.collector_address, credentials, options), metadata

    # -- one process at a time, for fault tests -------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the stack process ``name`` (``collector``, ``agent-NODE``,
        ``rtbench-sim``) and, unless it is SIGSTOP/SIGCONT, wait until it has exited.
        ``influxd`` stops the private InfluxDB (its port and data stay for ``restart``)."""
        if name == "influxd":
            if self._influxd is None:
                raise StackError("no private influxd in this stack (start_influxd=False)")
            self._influxd.stop(timeout=self.settings.stop_grace)
            return
        proc = self._process(name)
        proc.popen.send_signal(sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            proc.popen.wait(self.settings.stop_grace)

    def restart(self, name: str) -> None:
        """Start the stack process ``name`` again with the arguments it had (a collector on
        the address it listened on), after it exited; returns once it is usable again: the
        collector's ready line, an agent connected with a clock estimate, influxd's ping."""
        if name == "influxd":
            if self._influxd is None:
                raise StackError("no private influxd in this stack (start_influxd=False)")
            try:
                self._influxd.start(timeout=self.settings.start_timeout)
            except InfluxdError as exc:
                raise StackError(f"InfluxDB: {exc}") from exc
            return
        old = self._process(name)
        if old.popen.poll() is None:
            raise StackError(f"{name} is still running (pid {old.popen.pid}): kill it first")
        args = old.argv[1:]
        if name == "collector":
            # Port 0 picked a free port the first time; the agents dial that one.
            args = [self.collector_address if a == "127.0.0.1:0" else a for a in args]
        proc = spawn(name, Path(old.argv[0]).name, args, self.settings.root / "logs")
        self._processes[self._processes.index(old)] = proc
        self.pids[name] = proc.popen.pid
        if name == "collector":
            self._wait_line(proc, COLLECTOR_READY)
        elif name.startswith("agent-"):
            self._wait_agents()

    def _process(self, name: str) -> StackProcess:
        for proc in self._processes:
            if proc.name == name:
                return proc
        names = ", ".join(p.name for p in self._processes) or "none"
        raise StackError(f"no stack process named {name!r} (running: {names})")

    # -- stop ------------------------------------------------------------------------

    def stop(self, *, strict: bool = True) -> None:
        """Stop everything in reverse order.

        ``strict``: raise StackError when a process did not exit cleanly (else log it).
        """
        problems: list[tuple[StackProcess | None, str]] = []
        agents = [p for p in self._processes if p.name.startswith("agent-")]
        others = [p for p in reversed(self._processes) if p not in agents]
        sim = next((p for p in self._processes if p.name == "rtbench-sim"), None)
        if sim is not None and sim.popen.poll() is None:
            self.workload_pids = child_pids(sim.popen.pid)
        # Agents first (they flush to a collector still listening), then the collector,
        # then the cluster whose pods they watched.
        problems += stop_group(agents, self.settings.stop_grace)
        if self._mirror is not None:
            self._mirror.stop()
            self._mirror = None
        for proc in others:
            problems += stop_group([proc], self.settings.stop_grace)
        left = reap(self.workload_pids)
        if left:
            problems.append((None, f"rtbench-sim left {left} workload processes running (killed)"))
        self.exit_codes.update({p.name: p.popen.wait() for p in self._processes})
        self._stop_influxd()
        if self._own_ctd_dir and self._ctd_dir is not None:
            shutil.rmtree(self._ctd_dir, ignore_errors=True)
        self._processes = []
        atexit.unregister(self._stop_quietly)
        if problems and strict:
            culprit = next((p for p, _ in problems if p is not None), None)
            detail = f"\n{culprit.name} log: {culprit.log}\n{culprit.tail()}" if culprit else ""
            raise StackError("; ".join(text for _, text in problems) + detail)
        for _, text in problems:
            log.warning("%s", text)

    def _stop_quietly(self) -> None:
        self.stop(strict=False)

    def _stop_influxd(self) -> None:
        server, self._influxd = self._influxd, None
        if server is not None:
            server.stop(timeout=self.settings.stop_grace)

    # -- context managers --------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # While an error propagates, a second one from stopping would only hide it.
        self.stop(strict=exc is None)

    async def __aenter__(self) -> LocalStack:
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The thread cannot be cancelled: tell it to give up, and let it stop what it
            # started before this task goes on being cancelled.
            self._cancel.set()
            with contextlib.suppress(Exception):
                await starting
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop, strict=exc is None)

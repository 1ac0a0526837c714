"""The agent's settings: one frozen dataclass, filled from defaults < environment < flags.

``AgentSettings`` holds the observers' ``ObserveSettings`` (agent/observing.py)
and the uplink's ``UplinkSettings`` (defined here), plus what only the command
needs. Every value is checked without I/O when the dataclasses are built, so a
bad configuration is refused with one clear line before anything starts; files
named here (token, certificates, kubeconfig, state dir) are opened later, at
connect time (exit 1 if that fails, not 2).

Every flag ``--some-flag`` can also be set as ``RTBENCH_AGENT_SOME_FLAG``; flags
win. The node name also comes from ``NODE_NAME``, which a DaemonSet sets from the
downward API (``spec.nodeName``); ``RTBENCH_AGENT_NODE`` and ``--node`` override it.

Decisions documented here because they show in the flags:

- Plaintext is the default towards a loopback collector (the demo, tests, a
  collector on the same machine). A collector elsewhere needs TLS (``--tls-ca``,
  optionally ``--tls-cert``/``--tls-key`` for client certificates) or an explicit
  ``--insecure``; the token would otherwise cross the network in clear without
  anybody having said so. TLS is on exactly when ``--tls-ca`` is given.
- Without ``--kubeconfig`` the agent uses the in-cluster service account when it
  runs in a pod (``KUBERNETES_SERVICE_HOST`` set), else ``$KUBECONFIG`` or
  ``~/.kube/config`` like kubectl.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from rtbench.cli import parse_bool as _bool
from rtbench.cli import parse_float as _float
from rtbench.cli import parse_int as _int
from rtbench.grpcsecurity import channel_problem, parse_target

from .errors import ConfigError
from .observing import ObserveSettings

__all__ = [
    "LOG_LEVELS",
    "OPTIONS",
    "AgentSettings",
    "Option",
    "UplinkSettings",
    "help_text",
    "parse_collector",
    "settings_from_sources",
]

LOG_LEVELS = ("debug", "info", "warning", "error")
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_collector(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) as (host, port); raises ConfigError."""
    try:
        return parse_target(text)
    except ValueError as exc:
        raise ConfigError(f"--collector {exc}") from None


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    if isinstance(value, float) and math.isinf(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")


@dataclass(frozen=True)
class UplinkSettings:
    """How the agent reaches the collector and how much it keeps while it cannot."""

    collector: str
    """HOST:PORT of the collector's gRPC port; no default, there is no well-known place."""
    state_dir: Path = Path("/var/lib/rtbench-agent")
    """Spool and agent id; the DaemonSet mounts a hostPath here so both survive restarts."""
    agent_id: str | None = None
    """None: ``<node>-<8 hex>`` persisted in state_dir, so a new state dir is a new identity
    and sequence numbers can never collide with what an earlier identity sent."""
    token: str | None = field(default=None, repr=False)
    """Bearer token sent as ``authorization`` metadata; None sends none."""
    token_file: Path | None = None
    """Token read from a file (a mounted Secret) at every connect, so a rotated or fixed
    token is picked up without restarting the agent."""
    tls_ca: Path | None = None
    """PEM CA that signed the collector's certificate; giving it turns TLS on."""
    tls_cert: Path | None = None
    """PEM client certificate, for collectors that require one (with tls_key)."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_server_name: str | None = None
    """Name to verify in the collector's certificate when it differs from the host dialled."""
    insecure: bool = False
    """Allows plaintext to a non-loopback collector; off so that nobody does it by accident."""
    batch_max_events: int = 500
    """Records per batch: 500 events are ~100 KB on the wire, far below gRPC's 4 MiB limit."""
    flush_interval_s: float = 0.1
    """Oldest pending record age that seals a batch; the issue promises a flush within 100 ms,
    so this is also the largest value accepted."""
    memory_buffer: int = 1000
    """Unacknowledged batches also held in memory (beyond: disk only, read back to resend).
    1000 small batches are a few MB, and cover ~100 s of a busy node without disk reads."""
    spool_max_bytes: int = 256 * 2**20
    """Disk the spool may use; 256 MiB holds hours of a busy node, small enough for a Pi's SD."""
    window: int = 64
    """Batches sent but not yet acknowledged, to bound what the collector must hold for us."""
    clock_sync_interval_s: float = 10.0
    """Clock sync period: drift of a few ppm moves the offset by tens of µs in 10 s."""
    clock_sync_burst: int = 8
    """Exchanges right after connecting, so the first batches already carry a good offset."""
    reconnect_min_s: float = 0.1
    """First reconnect backoff cap; full jitter picks uniformly below it."""
    reconnect_max_s: float = 5.0
    """Backoff cap: a collector back from a restart is reached within seconds."""
    operator_retry_s: float = 30.0
    """Retry period after an auth, TLS or protocol failure, which needs a person to fix."""
    response_timeout_s: float = 30.0
    """A stream with batches or clock requests outstanding and no answer for this long is
    dead (a collector host that vanished sends no RST); far above any commit time."""
    shutdown_flush_s: float = 5.0
    """At SIGTERM, how long to wait for the collector to ack what is pending; the rest stays
    in the spool. Below Kubernetes' default 30 s termination grace period."""

    def __post_init__(self) -> None:
        if self.agent_id is not None and not _AGENT_ID.match(self.agent_id):
            raise ConfigError(
                f"--agent-id must be 1-128 letters, digits, '.', '_' or '-', got {self.agent_id!r}"
            )
        problem = channel_problem(self)
        if problem is not None:
            raise ConfigError(problem)
        for name, minimum in (
            ("batch_max_events", 1),
            ("memory_buffer", 1),
            ("window", 1),
            ("clock_sync_burst", 0),
            ("spool_max_bytes", 2**20),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be an integer of at least {minimum}, got {value!r}")
        for name in (
            "flush_interval_s",
            "clock_sync_interval_s",
            "reconnect_min_s",
            "reconnect_max_s",
            "operator_retry_s",
            "response_timeout_s",
            "shutdown_flush_s",
        ):
            _positive("--" + name.removesuffix("_s").replace("_", "-"), getattr(self, name))
        if self.flush_interval_s > 0.1:
            raise ConfigError(
                f"--flush-interval must be at most 0.1 s, got {self.flush_interval_s!r}"
            )
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ConfigError("--reconnect-min must not exceed --reconnect-max")

    @property
    def host(self) -> str:
        return parse_collector(self.collector)[0]

    @property
    def port(self) -> int:
        return parse_collector(self.collector)[1]

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None


@dataclass(frozen=True)
class AgentSettings:
    """Everything ``agent run`` needs."""

    observe: ObserveSettings
    """Watching, probing and sampling (agent/observing.py documents the defaults)."""
    uplink: UplinkSettings
    kubeconfig: Path | None = None
    """None: in-cluster service account in a pod, else $KUBECONFIG or ~/.kube/config."""
    log_level: str = "info"
    """INFO shows the start line, connects and the progress line; nothing per record."""
    progress_interval_s: float = 30.0
    """Progress line period: often enough to follow a run, rare enough for a long log."""

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        _positive("--progress-interval", self.progress_interval_s)

    @property
    def node(self) -> str:
        return self.observe.node


# -- flags and environment ------------------------------------------------------

ENV_PREFIX = "RTBENCH_AGENT_"
NODE_ENV = "NODE_NAME"
"""Set by the DaemonSet from the downward API (fieldRef spec.nodeName)."""


_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def _bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]i?)?\s*", text)
    if not match:
        raise ValueError(f"must be a byte count like 268435456, 256Mi or 1G, got {text!r}")
    return int(match[1]) * _UNITS[(match[2] or "").lower()]


def _text(text: str) -> str:
    return text


@dataclass(frozen=True)
class Option:
    """One setting as a flag and an environment variable."""

    flag: str
    section: str
    """Which dataclass the value goes to: agent, uplink or observe."""
    name: str
    parse: Callable[[str], object]
    help: str
    switch: bool = False
    """A flag without a value (its environment variable takes true/false)."""

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option("--node", "observe", "node", _text, "this node's name (default: $NODE_NAME)"),
    Option("--collector", "uplink", "collector", _text, "HOST:PORT of the collector (required)"),
    Option(
        "--kubeconfig",
        "agent",
        "kubeconfig",
        Path,
        "kubeconfig to read (default: the in-cluster service account when "
        "KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG, else ~/.kube/config)",
    ),
    Option("--namespace", "observe", "namespace", _text, "watch one namespace (default: all)"),
    Option("--label-selector", "observe", "label_selector", _text, "label selector of the pods"),
    Option("--token", "uplink", "token", _text, "bearer token for the collector (default: none)"),
    Option("--token-file", "uplink", "token_file", Path, "file holding the bearer token"),
    Option("--tls-ca", "uplink", "tls_ca", Path, "PEM CA of the collector; turns TLS on"),
    Option("--tls-cert", "uplink", "tls_cert", Path, "PEM client certificate"),
    Option("--tls-key", "uplink", "tls_key", Path, "PEM key of the client certificate"),
    Option(
        "--tls-server-name",
        "uplink",
        "tls_server_name",
        _text,
        "name to verify in the collector's certificate (default: the collector's host)",
    ),
    Option(
        "--insecure", "uplink", "insecure", _bool, "allow plaintext to a remote collector", True
    ),
    Option("--state-dir", "uplink", "state_dir", Path, "spool and agent id directory"),
    Option(
        "--agent-id",
        "uplink",
        "agent_id",
        _text,
        "agent identity (default: <node>-<8 hex>, persisted in the state dir)",
    ),
    Option("--batch-max-events", "uplink", "batch_max_events", _int, "records per batch"),
    Option(
        "--flush-interval", "uplink", "flush_interval_s", _float, "max age of a pending record, s"
    ),
    Option("--memory-buffer", "uplink", "memory_buffer", _int, "unacked batches in memory"),
    Option("--spool-max-bytes", "uplink", "spool_max_bytes", _bytes, "spool size, e.g. 256Mi"),
    Option("--window", "uplink", "window", _int, "batches in flight before acks"),
    Option(
        "--clock-sync-interval",
        "uplink",
        "clock_sync_interval_s",
        _float,
        "seconds between clock exchanges",
    ),
    Option("--clock-sync-burst", "uplink", "clock_sync_burst", _int, "exchanges at connect"),
    Option("--reconnect-min", "uplink", "reconnect_min_s", _float, "first backoff cap, s"),
    Option("--reconnect-max", "uplink", "reconnect_max_s", _float, "backoff cap, s"),
    Option(
        "--operator-retry",
        "uplink",
        "operator_retry_s",
        _float,
        "retry period after an auth, TLS or protocol failure, s",
    ),
    Option(
        "--response-timeout",
        "uplink",
        "response_timeout_s",
        _float,
        "a stream awaiting answers and silent this long is dead, s",
    ),
    Option("--shutdown-flush", "uplink", "shutdown_flush_s", _float, "wait for acks at SIGTERM, s"),
    Option("--watch-timeout", "observe", "watch_timeout_s", _int, "server watch timeout, s"),
    Option(
        "--inactivity-timeout",
        "observe",
        "inactivity_timeout_s",
        _float,
        "a watch silent this long is reconnected, s",
    ),
    Option("--watch-reconnect-max", "observe", "reconnect_max_s", _float, "watch backoff cap, s"),
    Option("--probe-port", "observe", "probe_port", _int, "port when a pod declares none"),
    Option("--probe-path", "observe", "probe_path", _text, "HTTP path to probe"),
    Option(
        "--probe-rate",
        "observe",
        "probe_rate",
        _float,
        "probe attempts/s on the node; 0 turns probing off",
    ),
    Option("--probe-timeout", "observe", "probe_timeout_s", _float, "per probe attempt, s"),
    Option(
        "--probe-first-interval",
        "observe",
        "probe_first_interval_s",
        _float,
        "first interval between probes of a waiting pod, s",
    ),
    Option(
        "--probe-max-interval",
        "observe",
        "probe_max_interval_s",
        _float,
        "cap of that interval until the first response, s",
    ),
    Option(
        "--probe-after-success-interval",
        "observe",
        "probe_after_success_interval_s",
        _float,
        "probe interval after the first response, s",
    ),
    Option("--probe-growth", "observe", "probe_growth", _float, "interval growth per attempt"),
    Option(
        "--sample-interval",
        "observe",
        "sample_interval_s",
        _float,
        "resource sample interval while pods are tracked, s",
    ),
    Option(
        "--idle-sample-interval",
        "observe",
        "idle_sample_interval_s",
        _float,
        "resource sample interval with no pods tracked, s",
    ),
    Option(
        "--containerd-socket",
        "observe",
        "containerd_socket",
        _text,
        "containerd's socket for ns-precise sandbox/container create, start and exit "
        "(default: auto = the first of /run/containerd/containerd.sock and "
        "/run/k3s/containerd/containerd.sock that exists; off disables it; absent or "
        "unreadable: one warning, the agent goes on and retries quietly)",
    ),
    Option(
        "--containerd-namespace",
        "observe",
        "containerd_namespace",
        _text,
        "containerd namespace of Kubernetes' containers",
    ),
    Option("--proc-root", "observe", "proc_root", Path, "where /proc is mounted"),
    Option("--cgroup-root", "observe", "cgroup_root", Path, "where the cgroup fs is mounted"),
    Option("--log-level", "agent", "log_level", str.lower, "debug, info, warning or error"),
    Option(
        "--progress-interval", "agent", "progress_interval_s", _float, "progress line period, s"
    ),
)

_SECTIONS: dict[str, type] = {
    "agent": AgentSettings,
    "uplink": UplinkSettings,
    "observe": ObserveSettings,
}


def _shown(value: object, parse: Callable[[str], object]) -> str:
    if parse is _bytes and isinstance(value, int):
        for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
            if value and value % size == 0:
                return f"{value // size}{unit}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def help_text(option: Option) -> str:
    """The option's help, with the settings dataclass's default unless it says its own.

    Defaults of None (nothing set) and of switches (off) are left to the help text.
    """
    if "default:" in option.help or "required" in option.help:
        return option.help
    default = next(
        (f.default for f in fields(_SECTIONS[option.section]) if f.name == option.name),
        MISSING,
    )
    if default is MISSING or default is None or isinstance(default, bool):
        return option.help
    return f"{option.help} (default: {_shown(default, option.parse)})"


def settings_from_sources(environ: Mapping[str, str], flags: Mapping[str, object]) -> AgentSettings:
    """Settings from defaults < environment < flags; raises ConfigError naming the source.

    ``flags`` maps each option's ``dest`` to the string given on the command line,
    True for a given switch, or None/False when absent.
    """
    sections: dict[str, dict[str, Any]] = {"agent": {}, "uplink": {}, "observe": {}}
    for option in OPTIONS:
        raw = flags.get(option.dest)
        source = option.flag
        if raw is None or raw is False:
            raw, source = environ.get(option.env), option.env
            if not raw and option.name == "node":
                raw, source = environ.get(NODE_ENV), NODE_ENV
            if not raw:
                continue
        if raw is True:
            value: object = True
        else:
            try:
                value = option.parse(str(raw))
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        sections[option.section][option.name] = value
    if not sections["observe"].get("node"):
        raise ConfigError(f"--node is required (or {ENV_PREFIX}NODE, or {NODE_ENV})")
    if "collector" not in sections["uplink"]:
        raise ConfigError(f"--collector is required (or {ENV_PREFIX}COLLECTOR)")
    try:
        observe = ObserveSettings(**sections["observe"])
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    uplink = UplinkSettings(**sections["uplink"])
    return AgentSettings(observe=observe, uplink=uplink, **sections["agent"])

"""How rtctl reaches the collector and the cluster: one frozen dataclass, defaults < env < flags.

Every rtctl command that talks to the collector (start-run, run-plan, report,
runs, agents) or to Kubernetes takes the same connection options, added to its
parser by ``add_connection_options`` and turned into ``ConnectionSettings`` by
``connection_settings``. Each flag ``--some-flag`` can also be set as
``RTBENCH_RTCTL_SOME_FLAG``; a flag given on the command line wins.

Values are checked without I/O when the dataclass is built, so a bad
combination is refused with one line (exit 2) before anything is contacted.
Files (token, certificates, kubeconfig) are read at connect time; failing that
is an operational error (exit 1).

The rules match the agent's, so one collector setup serves both: plaintext is
fine towards loopback (the demo, tests, a collector on this machine); a
collector elsewhere needs ``--tls-ca`` (TLS is on exactly when a CA is given)
or an explicit ``--insecure``, because the token would otherwise cross the
network in clear without anybody having decided so.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtbench.cli import parse_bool as _bool
from rtbench.cli import parse_float as _float
from rtbench.grpcsecurity import channel_problem

from .cliargs import parse_duration
from .errors import UsageError

__all__ = [
    "ENV_PREFIX",
    "ConnectionSettings",
    "add_connection_options",
    "connection_settings",
]

ENV_PREFIX = "RTBENCH_RTCTL_"


@dataclass(frozen=True)
class ConnectionSettings:
    """Where the collector and the cluster are, and how to authenticate to them."""

    collector: str = "127.0.0.1:7070"
    """HOST:PORT of the collector's gRPC port; the default is where ``collector serve``
    listens by default, so a collector on this machine needs no flag."""
    token: str | None = field(default=None, repr=False)
    """Bearer token for the control API (the collector's --control-token); None sends none."""
    token_file: Path | None = None
    """File holding the token (a mounted Secret, or a file kept out of shell history)."""
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
    rpc_timeout_s: float = 30.0
    """Deadline of one control call. Finishing a run computes its summary (about 0.4 s for
    10,000 pods); 30 s is far above any healthy answer and short enough to report a hung
    collector instead of waiting forever."""
    collector_outage_s: float = 60.0
    """How long start-run and run-plan ride out a collector that does not answer (it was
    restarted, say: its journal keeps everything) before the run fails. 60 s covers a
    restart by hand or by systemd with room to spare, and is short next to a run's
    default 300 s timeout; 0 fails at the first unanswered call."""
    kubeconfig: Path | None = None
    """None: $KUBECONFIG, else ~/.kube/config, as kubectl does."""
    context: str | None = None
    """kubeconfig context; None: the kubeconfig's current context, as kubectl does."""

    def __post_init__(self) -> None:
        problem = channel_problem(self)
        if problem is not None:
            raise UsageError(problem)
        timeout = self.rpc_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise UsageError(f"--rpc-timeout must be a number, got {timeout!r}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise UsageError(f"--rpc-timeout must be a positive number of seconds, got {timeout}")
        outage = self.collector_outage_s
        if isinstance(outage, bool) or not isinstance(outage, int | float):
            raise UsageError(f"--collector-outage must be a duration, got {outage!r}")
        if not (outage >= 0 and math.isfinite(outage)):
            raise UsageError(f"--collector-outage must not be negative, got {outage}")
        if self.context is not None and not self.context:
            raise UsageError("--context must not be empty")

    @property
    def uses_tls(self) -> bool:
        return self.tls_ca is not None


# -- flags and environment ------------------------------------------------------


def _text(text: str) -> str:
    return text


@dataclass(frozen=True)
class _Option:
    flag: str
    name: str
    """ConnectionSettings field."""
    parse: Callable[[str], object]
    help: str
    kubernetes: bool = False
    """Belongs to the cluster connection (left out for commands that only read the collector)."""
    runs: bool = False
    """Only for the commands that run (start-run, run-plan: the ones with ``kubernetes``)."""
    switch: bool = False

    @property
    def dest(self) -> str:
        return "conn_" + self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag[2:].replace("-", "_").upper()


_OPTIONS: tuple[_Option, ...] = (
    _Option("--collector", "collector", _text, "HOST:PORT of the collector (default: %s)"),
    _Option("--token", "token", _text, "bearer token for the collector's control API"),
    _Option("--token-file", "token_file", Path, "file holding the bearer token"),
    _Option("--tls-ca", "tls_ca", Path, "PEM CA of the collector's certificate; turns TLS on"),
    _Option("--tls-cert", "tls_cert", Path, "PEM client certificate (mutual TLS)"),
    _Option("--tls-key", "tls_key", Path, "PEM key of the client certificate"),
    _Option(
        "--tls-server-name",
        "tls_server_name",
        _text,
        "name to verify in the collector's certificate (default: the collector's host)",
    ),
    _Option("--insecure", "insecure", _bool, "allow plaintext to a remote collector", switch=True),
    _Option("--rpc-timeout", "rpc_timeout_s", _float, "deadline of one collector call, s"),
    _Option(
        "--collector-outage",
        "collector_outage_s",
        parse_duration,
        "how long a run rides out a collector that does not answer (restarted, say) before "
        "it fails, deleting its Deployment: 60, 90s, 2m; 0 fails at once",
        runs=True,
    ),
    _Option(
        "--kubeconfig",
        "kubeconfig",
        Path,
        "kubeconfig (default: $KUBECONFIG, else ~/.kube/config)",
        kubernetes=True,
    ),
    _Option(
        "--context",
        "context",
        _text,
        "kubeconfig context (default: its current context)",
        kubernetes=True,
    ),
)


def add_connection_options(parser: argparse.ArgumentParser, *, kubernetes: bool = True) -> None:
    """Add the collector (and, with ``kubernetes``, the cluster) connection flags.

    Every flag defaults to None on the parser so that an environment variable can
    fill it in ``connection_settings``; the help names both.
    """
    group = parser.add_argument_group(
        "connection", f"each flag can also be set as {ENV_PREFIX}<FLAG>, e.g. {ENV_PREFIX}TOKEN"
    )
    defaults = ConnectionSettings()
    for option in _OPTIONS:
        if (option.kubernetes or option.runs) and not kubernetes:
            continue
        text = option.help
        if "%s" in text:
            text = text % getattr(defaults, option.name)
        elif option.name == "rpc_timeout_s":
            text = f"{text} (default: {defaults.rpc_timeout_s:g})"
        elif option.name == "collector_outage_s":
            text = f"{text} (default: {defaults.collector_outage_s:g} s)"
        text = f"{text} [{option.env}]"
        if option.switch:
            group.add_argument(option.flag, dest=option.dest, action="store_true", help=text)
        else:
            metavar = option.flag[2:].upper()
            group.add_argument(option.flag, dest=option.dest, metavar=metavar, help=text)


def connection_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> ConnectionSettings:
    """Settings from defaults < environment < flags; raises UsageError naming the source."""
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        raw = getattr(args, option.dest, None)
        source = option.flag
        if raw is None or raw is False:
            raw, source = environ.get(option.env), option.env
            if not raw:
                continue
        if raw is True:
            values[option.name] = True
            continue
        try:
            values[option.name] = option.parse(str(raw))
        except ValueError as exc:
            raise UsageError(f"{source}: {exc}") from None
    return ConnectionSettings(**values)

"""Settings of ``collector serve``: one frozen dataclass, filled from three sources.

Precedence is defaults < environment (``RTBENCH_COLLECTOR_<FLAG>``, e.g.
``RTBENCH_COLLECTOR_LISTEN=0.0.0.0:7070``) < flags, so a deployment sets what it
always wants in the environment and a person overrides it on the command line.
``OPTIONS`` is the single table of flags; the CLI builds its parser from it and
``from_sources`` applies the precedence. ``check()`` refuses impossible or unsafe
combinations without any I/O (token and certificate files are read when the
server starts, by ``collector.security``). The InfluxDB target's own rules (URL,
API, what each API needs) live in ``collector.influxwrite.InfluxTarget``; ``check()``
tests which flags go together and then builds the target, so the rules exist once.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from rtbench.cli import parse_bool as _bool
from rtbench.cli import parse_float as _float
from rtbench.cli import parse_int as _int

from .errors import ConfigError
from .influxwrite import InfluxTarget

__all__ = [
    "ENV_PREFIX",
    "LOG_LEVELS",
    "OPTIONS",
    "CollectorSettings",
    "Option",
    "from_sources",
    "is_loopback",
]

ENV_PREFIX = "RTBENCH_COLLECTOR_"
LOG_LEVELS = ("debug", "info", "warning", "error")
MIB = 2**20


@dataclass(frozen=True)
class CollectorSettings:
    listen_host: str = "127.0.0.1"
    """Loopback by default: anything wider needs a token (or an explicit --insecure)."""
    listen_port: int = 7070
    """A fixed port agents and rtctl can be configured with once; 0 picks a free one."""
    journal: Path = Path("rtbench-journal.sqlite")
    """In the working directory, so a first try needs no flag; services should set a path."""
    agent_token: str = ""
    """Empty means agents are not authenticated (allowed on loopback only)."""
    agent_token_file: Path | None = None
    """A file holding the agent token, so it stays out of the process list."""
    control_token: str = ""
    """Empty means: the agent token protects the control API too."""
    control_token_file: Path | None = None
    """A file holding the control token."""
    tls_cert: Path | None = None
    """PEM certificate chain; without it the port speaks plaintext HTTP/2."""
    tls_key: Path | None = None
    """PEM private key belonging to tls_cert."""
    tls_client_ca: Path | None = None
    """When given, clients must present a certificate signed by this CA (mutual TLS)."""
    insecure: bool = False
    """Must be said out loud to serve a non-loopback address without a token."""
    influx_url: str = ""
    """Empty: journal only, the embedded default; InfluxDB is optional."""
    influx_db: str = ""
    """Database for the v1 /write endpoint (served by InfluxDB 1.x, 2.4+ and 3 Core)."""
    influx_user: str = ""
    """v1 basic-auth user; empty when InfluxDB runs without authentication."""
    influx_password: str = ""
    """v1 password for influx_user."""
    influx_token: str = ""
    """API token: v1 sends it as 'Authorization: Token' when given, v2 requires it."""
    influx_org: str = ""
    """v2 organisation (required by /api/v2/write)."""
    influx_bucket: str = ""
    """v2 bucket (required by /api/v2/write)."""
    influx_api: str = "v1"
    """v1 works with every InfluxDB generation; v2 must be chosen explicitly."""
    max_batch_events: int = 50_000
    """Events + samples + probes in one batch; an agent seals far smaller batches (~1 s)."""
    max_message_bytes: int = 64 * MIB
    """gRPC receive limit. A batch may hold max_batch_events records at roughly
    360 bytes each (names, UIDs, labels): 50 000 of them are about 18 MiB, so 64 MiB
    leaves room for long labels. A smaller limit answers RESOURCE_EXHAUSTED, which
    an agent takes for push back and retries forever."""
    max_pending_batches: int = 1024
    """Batches received but not yet committed; beyond it agents get RESOURCE_EXHAUSTED
    and keep their data. 1024 bounds memory to ~1024 x the typical batch size."""
    max_export_backlog: int = 5_000_000
    """Journal rows not yet in InfluxDB before agents are pushed back; 0 = unlimited.
    Hours of data from a small cluster: the journal keeps everything anyway, so only a
    long outage should reach it."""
    shutdown_grace: float = 10.0
    """Seconds to finish committing and acknowledging what was received when stopping."""
    stats_interval: float = 60.0
    """Seconds between INFO lines with counters; 0 turns them off."""
    log_level: str = "info"
    """INFO logs start, agent connects/disconnects and the periodic counters."""

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def influx_enabled(self) -> bool:
        return bool(self.influx_url)

    def check(self) -> None:
        """Raise ConfigError naming the first impossible or unsafe value; does no I/O."""
        if not self.listen_host:
            raise ConfigError("listen host must not be empty")
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"listen port must be between 0 and 65535, got {self.listen_port}")
        if not self.journal.name:
            raise ConfigError(f"journal path must name a file, got {str(self.journal)!r}")
        for token, file, name in (
            (self.agent_token, self.agent_token_file, "agent"),
            (self.control_token, self.control_token_file, "control"),
        ):
            if token and file is not None:
                raise ConfigError(f"give --{name}-token or --{name}-token-file, not both")
        has_token = bool(self.agent_token) or self.agent_token_file is not None
        if not has_token and not self.insecure and not is_loopback(self.listen_host):
            raise ConfigError(
                f"refusing to listen on non-loopback address {self.listen_host} without "
                "--agent-token; pass --insecure to accept unauthenticated agents"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        self._check_influx()
        for name in ("max_batch_events", "max_pending_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 64 * 1024 <= self.max_message_bytes <= 2**31 - 1:
            raise ConfigError(
                f"max_message_bytes must be between 65536 and {2**31 - 1}, "
                f"got {self.max_message_bytes}"
            )
        if self.max_export_backlog < 0:
            raise ConfigError(f"max_export_backlog must be >= 0, got {self.max_export_backlog}")
        if not self.shutdown_grace >= 0:
            raise ConfigError(f"shutdown_grace must be >= 0, got {self.shutdown_grace}")
        if not self.stats_interval >= 0:
            raise ConfigError(f"stats_interval must be >= 0, got {self.stats_interval}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(
                f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )

    def influx_target(self) -> InfluxTarget | None:
        """The exporter's target, None for journal only. No I/O; raises InvalidTarget
        (a ConfigError) when the target's own rules refuse it."""
        if not self.influx_enabled:
            return None
        return InfluxTarget(
            url=self.influx_url,
            database=self.influx_db,
            username=self.influx_user,
            password=self.influx_password,
            token=self.influx_token,
            org=self.influx_org,
            bucket=self.influx_bucket,
            api=self.influx_api,
        )

    def _check_influx(self) -> None:
        """Flags that only go with other flags; the target checks the rest."""
        given = [
            name
            for name in ("db", "user", "password", "token", "org", "bucket")
            if getattr(self, f"influx_{name}")
        ]
        if not self.influx_url:
            if given:
                raise ConfigError(f"--influx-{given[0]} needs --influx-url")
            return
        if self.influx_api == "v1":
            if self.influx_org or self.influx_bucket:
                raise ConfigError("--influx-org and --influx-bucket need --influx-api v2")
            if self.influx_password and not self.influx_user:
                raise ConfigError("--influx-password needs --influx-user")
        elif self.influx_api == "v2":
            if self.influx_db or self.influx_user or self.influx_password:
                raise ConfigError(
                    "--influx-db, --influx-user and --influx-password are for --influx-api v1"
                )
        self.influx_target()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach; host names other than localhost
    count as reachable from outside, since resolving them would be I/O."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- the flag table -------------------------------------------------------------


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _path(text: str) -> Path:
    # Path("") is Path("."): an empty value would only fail later, at open.
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


@dataclass(frozen=True)
class Option:
    """One flag: ``--name``, its environment variable and the settings field(s) it fills."""

    flag: str
    parse: Callable[[str], Any]
    help: str
    switch: bool = False
    """A flag without a value (``--insecure``); its environment variable takes true/false."""

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option("--listen", _listen, "HOST:PORT to serve gRPC on; port 0 picks one (127.0.0.1:7070)"),
    Option("--journal", _path, "SQLite journal file (./rtbench-journal.sqlite)"),
    Option("--agent-token", str, "bearer token agents must present (none)"),
    Option("--agent-token-file", Path, "file holding the agent token"),
    Option("--control-token", str, "bearer token rtctl must present (the agent token)"),
    Option("--control-token-file", Path, "file holding the control token"),
    Option("--tls-cert", Path, "PEM certificate chain: serve TLS"),
    Option("--tls-key", Path, "PEM private key of --tls-cert"),
    Option("--tls-client-ca", Path, "PEM CA: require client certificates signed by it"),
    Option("--insecure", _bool, "allow a non-loopback address without a token", switch=True),
    Option("--influx-url", str, "InfluxDB URL, e.g. http://127.0.0.1:8086 (journal only)"),
    Option("--influx-db", str, "InfluxDB database for --influx-api v1"),
    Option("--influx-user", str, "InfluxDB v1 user"),
    Option("--influx-password", str, "InfluxDB v1 password"),
    Option("--influx-token", str, "InfluxDB API token"),
    Option("--influx-org", str, "InfluxDB organisation for --influx-api v2"),
    Option("--influx-bucket", str, "InfluxDB bucket for --influx-api v2"),
    Option("--influx-api", str, "InfluxDB write API: v1 (/write) or v2 (/api/v2/write) (v1)"),
    Option("--max-batch-events", _int, "most events+samples+probes in one batch (50000)"),
    Option("--max-message-bytes", _int, "largest gRPC message accepted (67108864 = 64 MiB)"),
    Option("--max-pending-batches", _int, "uncommitted batches before push-back (1024)"),
    Option("--max-export-backlog", _int, "unexported rows before push-back; 0 = off (5000000)"),
    Option("--shutdown-grace", _float, "seconds to drain on SIGTERM (10)"),
    Option("--stats-interval", _float, "seconds between counter log lines; 0 = off (60)"),
    Option("--log-level", str, "debug, info, warning or error (info)"),
)

FIELD_NAMES = frozenset(f.name for f in fields(CollectorSettings))


def from_sources(flags: Mapping[str, Any], environ: Mapping[str, str]) -> CollectorSettings:
    """Settings from defaults < environment < flags, checked.

    ``flags`` maps option dests (``agent_token``) to parsed values, None when not
    given. Raises ConfigError naming the variable or flag at fault.
    """
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = flags.get(option.dest)
        if value is None:
            raw = environ.get(option.env)
            if raw is not None and raw != "":
                try:
                    value = option.parse(raw)
                except argparse.ArgumentTypeError as exc:
                    raise ConfigError(f"{option.env}: {exc}") from None
        if value is None:
            continue
        if option.dest == "listen":
            values["listen_host"], values["listen_port"] = value
        else:
            values[option.dest] = value
    if "log_level" in values:
        values["log_level"] = str(values["log_level"]).lower()
    unknown = set(values) - FIELD_NAMES
    assert not unknown, f"options without a settings field: {unknown}"
    settings = CollectorSettings(**values)
    settings.check()
    return settings

"""Settings of the simulated cluster: one frozen dataclass, checked without I/O.

The CLI fills it from defaults < environment (``RTBENCH_SIM_*``) < flags; tests
build it directly or pass keyword overrides to ``SimCluster``. ``check()`` refuses
impossible values before anything is started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError
from .nodes import node_name

MAX_NODES = 254
"""Node i owns the pod range 127.i.0.0/16, so i must fit in one octet."""
NODE_MODES = ("simulated", "real", "auto")
MAX_SOCKET_PATH = 107
"""A unix socket path must fit sockaddr_un.sun_path (108 bytes with its NUL)."""


@dataclass(frozen=True)
class SimSettings:
    nodes: int = 2
    """Two nodes is the smallest cluster where spreading and per-node watches show."""
    host: str = "127.0.0.1"
    """Loopback only: the API has no authentication."""
    port: int = 0
    """0 picks a free port, so parallel test sessions never collide."""
    max_pods: int = 110
    """The kubelet's default --max-pods, the cap one study lost its experiment to."""
    profiles_file: Path | None = None
    """YAML overriding or adding runtime profiles; None uses the defaults."""
    workload: Path | None = None
    """The workload server binary; None finds (and if needed builds) workload/build/server."""
    state_dir: Path | None = None
    """Where pod logs go; None makes a temporary directory removed at stop."""
    seed: int | None = None
    """Seeds the delay and name RNG so a run's draws repeat; None is random."""
    pleg_period: float = 1.0
    """The kubelet's generic PLEG relists every second; 0 publishes at once."""
    bookmark_interval: float = 5.0
    """How often a watch with allowWatchBookmarks gets a BOOKMARK."""
    history_size: int = 10000
    """Watch events kept for resuming; older resourceVersions get 410."""
    watch_timeout: float = 1800.0
    """Server-side watch timeout without timeoutSeconds (real: 30 min plus jitter)."""
    crashloop_backoff: float = 10.0
    """The kubelet's first CrashLoopBackOff delay; doubles per restart."""
    crashloop_backoff_max: float = 300.0
    """The kubelet caps the restart backoff at five minutes."""
    ip_quarantine: float = 60.0
    """A released pod IP is not reused sooner, so a stale prober never reaches a new pod."""
    max_body_bytes: int = 3 * 2**20
    """The real API server's request size limit is 3 MiB."""
    node_mode: str = "simulated"
    """``simulated``: pods run the workload after the runtime profiles' delays;
    ``real``: pods are real containers started through rtbench's own containerd (root,
    containerd, runc; crun and runsc when installed); ``auto``: real where this machine
    can, else simulated, with the reason logged and in the state."""
    containerd_dir: Path | None = None
    """Serve a containerd-compatible socket per node at DIR/<node>.sock; None: off, so a
    simulator never creates sockets nobody asked for and long state paths never hit the
    unix socket path limit."""

    def check(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        if not 1 <= self.nodes <= MAX_NODES:
            raise ConfigError(f"nodes must be between 1 and {MAX_NODES}, got {self.nodes}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_pods < 1:
            raise ConfigError(f"max_pods must be at least 1, got {self.max_pods}")
        if self.history_size < 1:
            raise ConfigError(f"history_size must be at least 1, got {self.history_size}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        for name in (
            "pleg_period",
            "bookmark_interval",
            "watch_timeout",
            "crashloop_backoff",
            "crashloop_backoff_max",
            "ip_quarantine",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite non-negative number, got {value!r}")
        if self.node_mode not in NODE_MODES:
            raise ConfigError(
                f"node_mode must be one of {', '.join(NODE_MODES)}, got {self.node_mode!r}"
            )
        if self.bookmark_interval == 0:
            raise ConfigError("bookmark_interval must be positive")
        if self.watch_timeout == 0:
            raise ConfigError("watch_timeout must be positive")
        if self.containerd_dir is not None:
            longest = self.containerd_dir / f"{node_name(self.nodes)}.sock"
            if len(str(longest).encode()) > MAX_SOCKET_PATH:
                raise ConfigError(
                    f"containerd_dir is too long for unix sockets: {longest} has more than "
                    f"{MAX_SOCKET_PATH} bytes"
                )


FIELD_NAMES = frozenset(f.name for f in fields(SimSettings))

"""The one error hierarchy of the agent's uplink, settings and command.

Library code raises these; only ``agent/cli.py`` prints them (one line; exit 2
for ``ConfigError``, 1 for the other errors that end the agent). Whether the
uplink retries fast, retries slowly or gives up is decided by the type, never by
matching message text::

    AgentError
    ├── ConfigError            bad flags, environment or settings; nothing started (exit 2)
    │   ├── UsageError         (cli.py) a flag that does not parse
    │   ├── ObserveConfigError (observing.py) an observer setting is impossible
    │   ├── ForeignIdentity    the state dir holds the identity of another node
    │   └── KubeconfigError    --kubeconfig (or the default one) missing or unusable
    ├── StartupError           I/O at start failed: state dir, TLS files (exit 1)
    │   └── StateDirBusy       another live agent holds the state dir's lock
    ├── SpoolError             the on-disk spool cannot be written or read (exit 1)
    ├── TaskDied               a named long-running task ended on its own (exit 1)
    ├── ContainerdError        (containerd.py) containerd's API failed; retried quietly
    │   ├── ContainerdUnavailable  no socket, permission denied, refused, went away
    │   └── ContainerdFailed       any other failed call
    ├── WatchError             (watching.py) the Kubernetes watch failed
    │   ├── WatchRetryable     handled inside the watcher, with backoff
    │   │   └── WatchExpired   410 Gone: list again
    │   └── WatchRefused       RBAC or selector problem: ends the agent (exit 1)
    └── UplinkError            the stream to the collector broke; the uplink reconnects
        ├── TransientError     refused, reset, collector restarted or silent: fast backoff
        │   └── PushBack       RESOURCE_EXHAUSTED: the collector asks us to slow down
        └── OperatorError      will not heal by itself: logged as ERROR, retried slowly
            ├── AuthError      UNAUTHENTICATED / PERMISSION_DENIED: wrong or missing token
            ├── TlsError       handshake failed: wrong CA, bad certificate, name mismatch
            └── ProtocolError  the collector broke the contract or refused our batches

The uplink never gives up on an ``OperatorError``: the operator can fix the token
file or the collector while the agent keeps spooling, and a DaemonSet pod that
exited would only be restarted into the same failure.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "AuthError",
    "ConfigError",
    "ForeignIdentity",
    "KubeconfigError",
    "OperatorError",
    "ProtocolError",
    "PushBack",
    "SpoolError",
    "StartupError",
    "StateDirBusy",
    "TaskDied",
    "TlsError",
    "TransientError",
    "UplinkError",
]


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """Flags, environment or settings are unusable; nothing was started."""


class ForeignIdentity(ConfigError):
    """The state directory holds an agent id recorded for another node name: adopting
    it would merge two nodes' data under one identity."""


class KubeconfigError(ConfigError):
    """The kubeconfig given (or the default one) does not exist or cannot be used."""


class StartupError(AgentError):
    """An I/O step at start failed (state dir, agent id, TLS files)."""


class StateDirBusy(StartupError):
    """Another live agent holds the state directory's lock."""


class SpoolError(AgentError):
    """The on-disk spool could not be written or read."""


class TaskDied(AgentError):
    """A long-running task returned or raised although nobody asked it to stop."""


class UplinkError(AgentError):
    """The stream to the collector failed; unacknowledged batches are kept."""


class TransientError(UplinkError):
    """Connection refused or reset, the collector restarted or stopped answering."""


class PushBack(TransientError):
    """The collector answered RESOURCE_EXHAUSTED: keep the data and back off."""


class OperatorError(UplinkError):
    """A failure that needs a person (token, certificates, versions)."""


class AuthError(OperatorError):
    """The collector refused our token (UNAUTHENTICATED or PERMISSION_DENIED)."""


class TlsError(OperatorError):
    """The TLS handshake with the collector failed."""


class ProtocolError(OperatorError):
    """The collector did not follow rtbench.v1 or refused what we sent as invalid."""

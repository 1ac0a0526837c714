"""The one error hierarchy of rtctl: every command raises these, only rtctl/cli.py prints them.

Each class carries the exit code the CLI returns for it, so the mapping from a
failure to an exit code is decided by the type, never by the message. A run
that ends FAILED or TIMED_OUT is not an error: it is an outcome, returned with
its summary, and the command exits 1 itself after printing it::

    RtctlError
    ├── UsageError             bad flags, environment or plan/settings values (exit 2)
    ├── PreflightError         the cluster or the collector is not fit for the run; every
    │                          problem found is listed, not just the first (exit 2)
    ├── CollectorError         a control API call failed (exit 1)
    │   ├── CollectorUnreachable   nothing answers, TLS handshake failed, or a deadline passed
    │   ├── CollectorAuthError     the collector refused our token
    │   ├── UnknownRun             no run with that id
    │   └── RunExists              a run with that id is already registered
    ├── ClusterError           a Kubernetes API call failed or no kubeconfig (exit 1)
    └── Interrupted            SIGINT/SIGTERM: cleaned up and marked aborted (exit 130,
                               the shell's convention for "ended by SIGINT")
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ClusterError",
    "CollectorAuthError",
    "CollectorError",
    "CollectorUnreachable",
    "Interrupted",
    "PreflightError",
    "RtctlError",
    "RunExists",
    "UnknownRun",
    "UsageError",
]


class RtctlError(Exception):
    """Base of every error rtctl raises on purpose; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(RtctlError):
    """Flags, environment or a file's values are unusable; nothing was started."""

    exit_code = 2


class PreflightError(RtctlError):
    """The run would not measure what it claims; ``problems`` lists every reason found.

    ``str()`` is all problems, one per line, so the CLI prints the whole story at once.
    """

    exit_code = 2

    def __init__(self, problems: Sequence[str], warnings: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)
        self.warnings = tuple(warnings)
        lines = ["preflight refused the run:", *(f"  - {p}" for p in self.problems)]
        lines += [f"  (warning) {w}" for w in self.warnings]
        super().__init__("\n".join(lines))


class CollectorError(RtctlError):
    """A call to the collector's control API failed; the message says which and why."""


class CollectorUnreachable(CollectorError):
    """The collector did not answer: not running, wrong address, TLS, or a passed deadline."""


class CollectorAuthError(CollectorError):
    """The collector refused our bearer token (UNAUTHENTICATED / PERMISSION_DENIED)."""


class UnknownRun(CollectorError):
    """The collector has no run with that id (NOT_FOUND)."""


class RunExists(CollectorError):
    """A run with that id is already registered (ALREADY_EXISTS)."""


class ClusterError(RtctlError):
    """The Kubernetes API refused or failed a request rtctl needed."""


class Interrupted(RtctlError):
    """SIGINT or SIGTERM ended the command; the run was cleaned up and marked ABORTED, or
    kept the result it was finished with when the signal came during its teardown.

    ``state``: what the collector holds for the interrupted run (None: never registered),
    so that a plan counts it as its rerun will."""

    exit_code = 130

    def __init__(self, message: str, *, state: int | None = None) -> None:
        super().__init__(message)
        self.state = state

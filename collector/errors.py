"""The one error hierarchy of the collector.

Library code raises these; the gRPC servicers turn them into status codes and
only the CLI prints them (one line; exit 2 for ``ConfigError``, 1 for the rest).
Whether an agent may simply send the same thing again is a type
(``Retryable``), never a match on message text::

    CollectorError
    ├── ConfigError           bad flags, environment or settings; nothing started (exit 2)
    ├── ListenError           the listen address cannot be bound (exit 1)
    ├── JournalError          the SQLite journal cannot be opened, read or written (UNAVAILABLE)
    ├── InvalidRequest        a message the collector refuses as it is (INVALID_ARGUMENT)
    │   └── InvalidBatch      a batch fails validation; names the offending record
    ├── RunError              about the registry of runs
    │   ├── UnknownRun        no run with that id (NOT_FOUND)
    │   └── RunExists         a run with that id is already registered (ALREADY_EXISTS)
    ├── Retryable             try again later, keep the data
    │   ├── Overloaded        writer queue or export backlog full (RESOURCE_EXHAUSTED)
    │   └── ShuttingDown      the collector is stopping (UNAVAILABLE)
    └── ExportError           a write to InfluxDB did not go through (collector.influxwrite)
        ├── WriteRetryable    network error, timeout, 5xx, 429
        │   └── WriteRefused  credentials or database refused; retried slowly
        ├── WriteTooLarge     413: split the batch
        └── WriteRejected     other 4xx: bad lines, dead-lettered

``InvalidTarget`` (a ``ConfigError``) and the ``ExportError`` branch live in
``collector.influxwrite`` beside the writers that raise them.

``collector.summaries`` raises ``UnknownRun`` from here too, so the control API
maps one type to NOT_FOUND wherever the run went missing.
"""

from __future__ import annotations

__all__ = [
    "CollectorError",
    "ConfigError",
    "InvalidBatch",
    "InvalidRequest",
    "JournalError",
    "ListenError",
    "Overloaded",
    "Retryable",
    "RunError",
    "RunExists",
    "ShuttingDown",
    "UnknownRun",
]


class CollectorError(Exception):
    """Base of every error the collector raises on purpose."""


class ConfigError(CollectorError):
    """Settings, flags or environment values are unusable; nothing was started."""


class ListenError(CollectorError):
    """The gRPC server could not bind its address (in use, not local, no permission)."""


class JournalError(CollectorError):
    """The journal could not be opened, read or written; nothing was acknowledged."""


class InvalidRequest(CollectorError):
    """A request that will be refused however often it is sent."""


class InvalidBatch(InvalidRequest):
    """A batch fails validation; the message names the field and record."""


class RunError(CollectorError):
    """A problem with the registry of runs."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class UnknownRun(RunError):
    """No run with this id is registered."""

    def __init__(self, run_id: str, message: str | None = None) -> None:
        super().__init__(run_id, message or f"unknown run {run_id!r}")


class RunExists(RunError):
    """A run with this id is already registered; run ids are never reused."""

    def __init__(self, run_id: str, message: str | None = None) -> None:
        super().__init__(run_id, message or f"run {run_id!r} is already registered")


class Retryable(CollectorError):
    """The same request may succeed later; the sender keeps its data."""


class Overloaded(Retryable):
    """The writer queue or the export backlog is full: push back."""


class ShuttingDown(Retryable):
    """The collector is stopping and takes no new work."""

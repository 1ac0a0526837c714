"""The one error hierarchy of the simulated cluster.

Library code raises these; only the CLI prints them (one line, exit 2 for
``ConfigError``, 1 for the rest). An ``ApiError`` carries everything needed to
answer a request with a Kubernetes ``Status`` object, so the HTTP layer never
has to guess codes or reasons, and the controllers that go through the same
registry (the deployment controller creating pods) see the same errors a client
would::

    SimError
    ├── ConfigError               bad flags, settings or profile file (exit 2)
    ├── WorkloadError             workload binary missing or not buildable (exit 1)
    ├── RealNodeUnavailable       this machine cannot run a real-pod node (exit 1)
    └── ApiError                  a request the API refuses; renders as a Status
        ├── BadRequest            400  malformed body, selector, query
        ├── Forbidden             403  admission refused (unknown RuntimeClass, ...)
        ├── NotFound              404  no such object or path
        ├── MethodNotAllowed      405  known path, verb not served
        ├── AlreadyExists         409  create of an existing name
        ├── Conflict              409  stale resourceVersion precondition
        ├── Expired               410  resourceVersion older than the history
        ├── RequestTooLarge       413  body over the limit
        ├── UnsupportedMediaType  415  body or patch type not served
        ├── Invalid               422  object fails validation
        └── InternalError         500  a bug; logged with its traceback

``ApiError.retryable`` says whether a client may simply try again (409 Conflict,
429, 5xx), so callers never match on message text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SimError(Exception):
    """Base of every error the simulated cluster raises on purpose."""


class ConfigError(SimError):
    """Settings, flags or a profile file are unusable; nothing was started."""


class WorkloadError(SimError):
    """The workload binary cannot be found or built."""


class RealNodeUnavailable(SimError):
    """This machine cannot run a node with real pods (not root, a runtime or tool
    missing, cgroups not writable); the message says what is missing and how to fix it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiError(SimError):
    """A refused API request, rendered to clients as a Kubernetes Status."""

    code: ClassVar[int] = 500
    reason: ClassVar[str] = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        kind: str | None = None,
        group: str | None = None,
        causes: list[dict[str, str]] | None = None,
        code: int | None = None,
        reason: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.kind = kind
        self.group = group
        self.causes = causes
        self.retry_after = retry_after
        # Injected faults use arbitrary codes; the subclasses fix theirs.
        self.status_code: int = code if code is not None else type(self).code
        self.status_reason: str = reason if reason is not None else type(self).reason

    @property
    def retryable(self) -> bool:
        """True when repeating the same request later may succeed."""
        if self.status_code == 409:
            return self.status_reason == "Conflict"
        return self.status_code == 429 or self.status_code >= 500

    def status(self) -> dict[str, Any]:
        """The Status object a real API server would answer with."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.status_reason,
            "code": self.status_code,
        }
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind is not None:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


class BadRequest(ApiError):
    code = 400
    reason = "BadRequest"


class Forbidden(ApiError):
    code = 403
    reason = "Forbidden"


class NotFound(ApiError):
    code = 404
    reason = "NotFound"


class MethodNotAllowed(ApiError):
    code = 405
    reason = "MethodNotAllowed"


class AlreadyExists(ApiError):
    code = 409
    reason = "AlreadyExists"


class Conflict(ApiError):
    code = 409
    reason = "Conflict"


class Expired(ApiError):
    code = 410
    reason = "Expired"


class RequestTooLarge(ApiError):
    code = 413
    reason = "RequestEntityTooLarge"


class UnsupportedMediaType(ApiError):
    code = 415
    reason = "UnsupportedMediaType"


class Invalid(ApiError):
    code = 422
    reason = "Invalid"


class InternalError(ApiError):
    code = 500
    reason = "InternalError"


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(code: int) -> str:
    """The Status reason a real API server uses with ``code``."""
    if code in _REASONS:
        return _REASONS[code]
    return "InternalError" if code >= 500 else "BadRequest"

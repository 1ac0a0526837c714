"""Injected API faults: error responses and slowness for a while, on some paths.

rtbench's components must survive an API server that answers 503 for a few
seconds, one that is slow, watches that drop and histories that expire. The
first two are state kept here and applied by the API server's middleware to
every request under ``path_prefix`` (never to the ``/_sim/`` admin endpoints or
the health checks); dropped watches and expiry are actions on the store, done by
the cluster. All of it is reachable from tests in-process (``SimCluster``) and
over HTTP (``POST /_sim/faults/...``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, BadRequest, reason_for


@dataclass
class ErrorFault:
    status: int
    until: float
    path_prefix: str
    methods: frozenset[str] | None
    remaining: int | None
    """How many more requests fail; None: until ``until``."""


@dataclass
class SlowFault:
    delay: float
    until: float
    path_prefix: str


class Faults:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._errors: list[ErrorFault] = []
        self._slow: list[SlowFault] = []

    def inject_errors(
        self,
        status: int,
        seconds: float,
        *,
        path_prefix: str = "/",
        methods: list[str] | None = None,
        count: int | None = None,
    ) -> None:
        """Answer matching requests with ``status`` for ``seconds`` (or ``count`` times)."""
        if not 400 <= status <= 599:
            raise BadRequest(f"status must be between 400 and 599, got {status}")
        if seconds <= 0:
            raise BadRequest(f"seconds must be positive, got {seconds}")
        if count is not None and count < 1:
            raise BadRequest(f"count must be at least 1, got {count}")
        self._errors.append(
            ErrorFault(
                status=status,
                until=self._clock() + seconds,
                path_prefix=path_prefix,
                methods=frozenset(m.upper() for m in methods) if methods else None,
                remaining=count,
            )
        )

    def slow_down(self, delay_ms: float, seconds: float, *, path_prefix: str = "/") -> None:
        """Delay matching requests by ``delay_ms`` before handling them, for ``seconds``."""
        if delay_ms < 0 or delay_ms > 600_000:
            raise BadRequest(f"delay_ms must be between 0 and 600000, got {delay_ms}")
        if seconds <= 0:
            raise BadRequest(f"seconds must be positive, got {seconds}")
        self._slow.append(SlowFault(delay_ms / 1000.0, self._clock() + seconds, path_prefix))

    def clear(self) -> None:
        self._errors.clear()
        self._slow.clear()

    def _expire(self) -> None:
        now = self._clock()
        self._errors = [f for f in self._errors if f.until > now and f.remaining != 0]
        self._slow = [f for f in self._slow if f.until > now]

    def error_for(self, method: str, path: str) -> ApiError | None:
        """The error to answer this request with, if a fault says so (consumes a count)."""
        self._expire()
        for fault in self._errors:
            if not path.startswith(fault.path_prefix):
                continue
            if fault.methods is not None and method.upper() not in fault.methods:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            retry = 1 if fault.status in (429, 503) else None
            return ApiError(
                f"injected fault: the server is answering {fault.status} on {fault.path_prefix}",
                code=fault.status,
                reason=reason_for(fault.status),
                retry_after=retry,
            )
        return None

    def delay_for(self, path: str) -> float:
        """Seconds to hold this request before handling it."""
        self._expire()
        return max((f.delay for f in self._slow if path.startswith(f.path_prefix)), default=0.0)

    def summary(self) -> dict[str, Any]:
        self._expire()
        now = self._clock()
        return {
            "errors": [
                {
                    "status": f.status,
                    "path_prefix": f.path_prefix,
                    "methods": sorted(f.methods) if f.methods else None,
                    "remaining": f.remaining,
                    "seconds_left": round(f.until - now, 3),
                }
                for f in self._errors
            ],
            "slow": [
                {
                    "delay_ms": f.delay * 1000,
                    "path_prefix": f.path_prefix,
                    "seconds_left": round(f.until - now, 3),
                }
                for f in self._slow
            ],
        }

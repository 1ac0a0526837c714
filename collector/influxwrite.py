"""Writing line protocol to InfluxDB, and what to do when InfluxDB says no.

``InfluxTarget`` says where and how to write (checked without I/O). Two
writers speak to InfluxDB: the v1-compatible ``/write`` (InfluxDB 1.x, 2.4+
and 3 Core serve it) over aiohttp, and ``/api/v2/write`` through influxdb-client's
async API for 2.x setups without a DBRP mapping. Both turn every answer into
the same small set of error types, and ``Delivery`` applies one policy to them,
so the exporter never matches on status codes or message text::

    CollectorError                          (collector.errors)
    ├── ConfigError
    │   └── InvalidTarget      InfluxTarget settings that cannot work (also a ValueError)
    └── ExportError            a write to InfluxDB did not go through
        ├── WriteRetryable     network error, timeout, 5xx, 429: send the same lines again
        │   └── WriteRefused   401/403 credentials, 404 database or bucket missing:
        │                      retried slowly, the operator can fix it meanwhile
        ├── WriteTooLarge      413: the body is over InfluxDB's limit, split it
        └── WriteRejected      other 4xx: some lines are bad (parse error, type
                               conflict); isolate them and dead-letter them

Retries go on forever with capped exponential backoff and jitter: the journal
keeps every row, so giving up would only lose data that is safe to wait with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from collector.errors import CollectorError, ConfigError

__all__ = [
    "Delivery",
    "ExportError",
    "InfluxTarget",
    "InvalidTarget",
    "LineWriter",
    "Rejected",
    "V1Writer",
    "V2Writer",
    "WriteRefused",
    "WriteRejected",
    "WriteRetryable",
    "WriteTooLarge",
    "classify",
]

log = logging.getLogger("collector.export")

# A healthy InfluxDB answers a 5000-line write in milliseconds; 30 s only cuts
# off a server that hangs, and the batch is then retried like any network error.
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
FIRST_BACKOFF_S = 0.1
# Wrong credentials or a missing database are fixed by a person, not by the
# next attempt: no point knocking more often than this.
REFUSED_BACKOFF_S = 5.0
# Isolating bad lines by bisection costs about two requests per halving; past
# this many extra requests for one batch the rest is dead-lettered whole.
BISECT_BUDGET = 64
# While a failure lasts, repeat the log line at most this often.
LOG_REPEAT_S = 60.0


class ExportError(CollectorError):
    """A write to InfluxDB did not go through."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class WriteRetryable(ExportError):
    """Nothing is wrong with the lines; the same write may succeed later."""


class WriteRefused(WriteRetryable):
    """InfluxDB refuses us (credentials, missing database): retried slowly."""


class WriteTooLarge(ExportError):
    """The body is over InfluxDB's size limit (413)."""


class WriteRejected(ExportError):
    """InfluxDB cannot take (some of) these lines; resending them as they are fails again."""


def classify(status: int, text: str) -> ExportError:
    """The error type for a non-2xx answer; ``text`` is InfluxDB's explanation."""
    message = f"InfluxDB answered {status}: {text.strip()[:500] or '(no message)'}"
    if status in (401, 403, 404):
        return WriteRefused(message, status)
    if status == 413:
        return WriteTooLarge(message, status)
    if status == 429 or status >= 500:
        return WriteRetryable(message, status)
    if 400 <= status < 500:
        return WriteRejected(message, status)
    return WriteRetryable(message, status)


def _error_text(body: bytes | str, headers: Any) -> str:
    """InfluxDB's explanation: the JSON ``error``/``message`` member, else the
    X-Influxdb-Error header, else the raw body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    with contextlib.suppress(ValueError, AttributeError):
        decoded = json.loads(text)
        if isinstance(decoded, dict):
            for key in ("error", "message"):
                if isinstance(decoded.get(key), str):
                    return str(decoded[key])
    header = headers.get("X-Influxdb-Error") if headers is not None else None
    return str(header) if header else text


class LineWriter(Protocol):
    """Sends one body of newline-separated points; raises an ExportError subclass."""

    async def write(self, body: bytes) -> None: ...

    async def close(self) -> None: ...


class V1Writer:
    """POST {url}/write?db=…&precision=ns, with u/p or a token header."""

    def __init__(
        self, url: str, database: str, *, username: str = "", password: str = "", token: str = ""
    ) -> None:
        self._url = url.rstrip("/") + "/write"
        self._params = {"db": database, "precision": "ns"}
        if username:
            self._params["u"] = username
            self._params["p"] = password
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        self._session: aiohttp.ClientSession | None = None

    async def write(self, body: bytes) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(
                self._url, params=self._params, data=body, headers=self._headers
            ) as resp:
                if resp.status in (200, 204):
                    return
                raise classify(resp.status, _error_text(await resp.read(), resp.headers))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise WriteRetryable(f"cannot reach InfluxDB at {self._url}: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class V2Writer:
    """/api/v2/write through influxdb-client's async client (org, bucket, token)."""

    def __init__(self, url: str, *, org: str, bucket: str, token: str) -> None:
        self._url = url
        self._org = org
        self._bucket = bucket
        self._token = token
        self._client: Any = None
        self._write_api: Any = None

    async def write(self, body: bytes) -> None:
        # Imported here: the client pulls in a lot, and v1 setups never need it.
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self._url,
                token=self._token,
                org=self._org,
                timeout=int(REQUEST_TIMEOUT_S * 1000),
            )
            self._write_api = self._client.write_api()
        try:
            await self._write_api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=WritePrecision.NS,
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            if status == 0:
                raise WriteRetryable(f"InfluxDB v2 write failed: {exc.reason}") from exc
            text = _error_text(exc.body or b"", exc.headers) if exc.body else str(exc.message)
            raise classify(status, text) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise WriteRetryable(f"cannot reach InfluxDB at {self._url}: {exc!r}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class InvalidTarget(ConfigError, ValueError):
    """The InfluxDB target settings cannot work; found before any I/O."""


_FLAGS = {"org": "--influx-org", "bucket": "--influx-bucket", "token": "--influx-token"}


@dataclass(frozen=True)
class InfluxTarget:
    """Where and how to write. Checked on construction, without I/O.

    These checks are the one statement of what a target needs
    (``CollectorSettings.check`` builds a target to apply them), so their
    messages name the ``collector serve`` flags that set each field.
    """

    url: str
    """Base URL of InfluxDB, e.g. http://127.0.0.1:8086."""
    database: str = ""
    """v1 /write ?db= (required for api="v1"); on 2.x it needs a DBRP mapping."""
    username: str = ""
    """v1 auth as u/p query parameters, which 1.x and the 2.x compat API accept."""
    password: str = ""
    token: str = ""
    """v1: sent as "Authorization: Token <token>"; v2: the API token."""
    org: str = ""
    """v2 only: organisation of the bucket."""
    bucket: str = ""
    """v2 only: /api/v2/write bucket, for 2.x setups without DBRP."""
    api: str = "v1"
    """v1 by default: the one endpoint InfluxDB 1.x, 2.4+ and 3 Core all serve."""
    batch_lines: int = 5000
    """InfluxDB's own advice for batch size; well below its 25 MB body limit."""
    flush_interval_s: float = 0.2
    """Small batches at most this often: bounds the request rate under a trickle
    while keeping journal-to-InfluxDB far below the 1 s target."""
    max_retry_s: float = 30.0
    """Cap of the retry backoff: an InfluxDB that comes back is noticed within it."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise InvalidTarget(
                f"--influx-url must start with http:// or https://, got {self.url!r}"
            )
        if self.api == "v1":
            if not self.database:
                raise InvalidTarget("--influx-api v1 needs --influx-db (the /write database)")
        elif self.api == "v2":
            missing = [flag for name, flag in _FLAGS.items() if not getattr(self, name)]
            if missing:
                raise InvalidTarget(f"--influx-api v2 needs {', '.join(missing)}")
        else:
            raise InvalidTarget(f"--influx-api must be v1 or v2, got {self.api!r}")
        if self.batch_lines < 1:
            raise InvalidTarget("batch_lines must be at least 1")
        if self.flush_interval_s < 0 or self.max_retry_s <= 0:
            raise InvalidTarget("flush_interval_s must be >= 0 and max_retry_s > 0")

    def describe(self) -> str:
        if self.api == "v1":
            return f"{self.url} (v1 /write db={self.database})"
        return f"{self.url} (v2 /api/v2/write org={self.org} bucket={self.bucket})"

    def writer(self) -> LineWriter:
        if self.api == "v1":
            return V1Writer(
                self.url,
                self.database,
                username=self.username,
                password=self.password,
                token=self.token,
            )
        return V2Writer(self.url, org=self.org, bucket=self.bucket, token=self.token)


@dataclass(frozen=True)
class Rejected:
    """Lines InfluxDB would not take, with its answer: one dead-letter record each."""

    start: int  # index of the first line in the delivered batch
    lines: Sequence[str]
    status: int
    error: str


class Delivery:
    """Delivers one batch: retries what is retryable, splits on 413, bisects on
    400 to find the bad lines, and returns those as ``Rejected`` chunks.

    ``on_retry`` and ``on_split`` let the exporter count what happened.
    """

    def __init__(
        self,
        writer: LineWriter,
        max_retry_s: float,
        on_retry: Callable[[ExportError], None],
        on_split: Callable[[], None],
    ) -> None:
        self._writer = writer
        self._max_retry_s = max_retry_s
        self._on_retry = on_retry
        self._on_split = on_split
        self._failing_since: float | None = None
        self._attempts = 0
        self._last_log = 0.0

    async def deliver(self, lines: Sequence[str]) -> list[Rejected]:
        rejected: list[Rejected] = []
        pending: list[tuple[int, Sequence[str]]] = [(0, lines)]
        budget = BISECT_BUDGET
        while pending:
            start, chunk = pending.pop()
            try:
                await self._write_until_taken(chunk)
            except WriteTooLarge as exc:
                if len(chunk) == 1:
                    rejected.append(Rejected(start, chunk, exc.status, str(exc)))
                    continue
                self._on_split()
                pending.extend(_halves(start, chunk))
            except WriteRejected as exc:
                if len(chunk) == 1 or budget <= 0:
                    rejected.append(Rejected(start, chunk, exc.status, str(exc)))
                    continue
                budget -= 2
                self._on_split()
                pending.extend(_halves(start, chunk))
        return sorted(rejected, key=lambda r: r.start)

    async def _write_until_taken(self, lines: Sequence[str]) -> None:
        body = "\n".join(lines).encode()
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                await self._writer.write(body)
            except WriteRetryable as exc:
                self._note_failure(exc)
                self._on_retry(exc)
                if isinstance(exc, WriteRefused):
                    backoff = max(backoff, min(REFUSED_BACKOFF_S, self._max_retry_s))
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._max_retry_s)
                continue
            self._note_success()
            return

    def _note_failure(self, exc: ExportError) -> None:
        """Logs the first failure of an episode and then at most once a minute."""
        now = time.monotonic()
        self._attempts += 1
        if self._failing_since is None:
            self._failing_since = now
            self._last_log = now
            hint = " (check the credentials and database)" if isinstance(exc, WriteRefused) else ""
            log.warning("export to InfluxDB failing, will retry%s: %s", hint, exc)
        elif now - self._last_log >= LOG_REPEAT_S:
            self._last_log = now
            log.warning(
                "export to InfluxDB still failing after %d attempts over %.0f s: %s",
                self._attempts,
                now - self._failing_since,
                exc,
            )

    def _note_success(self) -> None:
        if self._failing_since is not None:
            log.info(
                "export to InfluxDB recovered after %d failed attempts over %.1f s",
                self._attempts,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
            self._attempts = 0


def _halves(start: int, chunk: Sequence[str]) -> list[tuple[int, Sequence[str]]]:
    """Second half first on the stack, so the first half is written first."""
    middle = len(chunk) // 2
    return [(start + middle, chunk[middle:]), (start, chunk[:middle])]

"""Watching the pods bound to this node: list, then watch, for as long as the agent runs.

Every transition the agent reports from the API is stamped with the moment its
watch line arrived, so the watch must be read line by line as it arrives and
never be down for long. The loop follows kopf's infinite / continuous watch:

- list the pods on this node (``fieldSelector=spec.nodeName=<node>`` plus the
  label selector), hand the whole list over (the tracker derives transitions and
  declares missing pods gone), and watch from the list's resourceVersion with
  bookmarks and a server-side timeout;
- a watch that ends normally (server timeout) is resumed from the last
  resourceVersion seen, events and bookmarks alike;
- ``in_sync_at`` keeps the arrival of the last list, event or bookmark: the
  latest moment the agent's view of the pods was known current. While a relist
  is handed over it still holds the previous one, so the tracker can bound what
  that list shows and the watch missed (agent/transitions.py). The start of a
  watch does not count: a real API server answers an expired resourceVersion
  with 200 and then an ERROR event, so a watch that started proves nothing;
- 410 Gone (an ERROR event or the response status) means the history is
  compacted: list again;
- a lost connection, 429 or 5xx, or nothing read from the socket for
  ``inactivity_timeout_s`` (a hung connection: the server accepted the watch but
  sends neither its response headers nor events or bookmarks) means reconnecting
  after a jittered exponential backoff (full jitter, capped at ``reconnect_max_s``,
  rtbench/backoff.py), resuming from the last resourceVersion; the backoff starts
  over once a watch delivers again;
- any other 4xx is a configuration or permission problem that retrying will not
  fix: ``run()`` raises ``WatchRefused``.

The lines are read and parsed here, not by kubernetes-asyncio's ``Watch``: it
would deserialise every pod into model classes (the tracker wants plain dicts)
and it opens a second ApiClient of its own. The requests still go through the
ApiClient, so its authentication and TLS settings apply.

Errors, the watcher's branch of the agent's tree (agent/errors.py)::

    AgentError
    └── WatchError             the API watch failed
        ├── WatchRetryable     lost connection, 429/5xx, inactivity: back off, resume
        │   └── WatchExpired   410: the resourceVersion is compacted, list again
        └── WatchRefused       other 4xx (RBAC, bad selector): run() raises it
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from aiohttp.http_exceptions import LineTooLong
from kubernetes_asyncio import client as k8s

from rtbench.backoff import full_jitter
from rtbench.clock import mono_ns, wall_ns

from .errors import AgentError
from .transitions import Obj, Stamp

if TYPE_CHECKING:
    from .observing import ObserveSettings

__all__ = [
    "PodWatcher",
    "WatchError",
    "WatchExpired",
    "WatchHandler",
    "WatchRefused",
    "WatchRetryable",
]

log = logging.getLogger(__name__)

RECONNECT_FIRST_S = 0.1
"""Backoff ceiling of the first retry: quick enough that a dropped watch loses little."""
CONNECT_TIMEOUT_S = 10.0
"""A connection to the API server that takes longer than this will not come."""
QUICK_END_S = 1.0
"""A watch that ends without a line sooner than this counts as a failure (no hot loop)."""


class WatchError(AgentError):
    """The API watch failed."""


class WatchRetryable(WatchError):
    """A failure that passes: reconnect after a backoff and resume."""


class WatchExpired(WatchRetryable):
    """410 Gone: the resourceVersion is no longer in the history; list again."""


class WatchRefused(WatchError):
    """The API refuses the request (4xx other than 410/429); retrying will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the API server refused to list pods: {status} {message}")
        self.status = status


class WatchHandler(Protocol):
    """Receives what the watch delivers, stamped on arrival."""

    def on_list(self, pods: list[Obj], stamp: Stamp) -> None: ...

    def on_event(self, kind: str, pod: Obj, stamp: Stamp) -> None: ...


def _status_error(status: int, body: Any) -> WatchError:
    message = body.get("message", "") if isinstance(body, dict) else str(body)[:200]
    if status == 410:
        return WatchExpired(f"410 {message}")
    if status in (408, 429) or status >= 500:
        return WatchRetryable(f"{status} {message}")
    return WatchRefused(status, message)


class PodWatcher:
    """Lists and watches this node's pods until cancelled, feeding a ``WatchHandler``."""

    def __init__(
        self, api: k8s.ApiClient, handler: WatchHandler, settings: ObserveSettings
    ) -> None:
        self._core = k8s.CoreV1Api(api)
        self._handler = handler
        self._settings = settings
        self._rv: str | None = None
        self._rng = random.Random()
        self.lists = 0
        """Lists made: the first one, then one after each 410."""
        self.watches = 0
        """Watch requests answered with 200."""
        self.reconnects = 0
        """Retries after a failure (lost connection, 5xx, inactivity, 410)."""
        self.expired = 0
        self.events = 0
        self.bookmarks = 0
        self.in_sync_at: Stamp | None = None
        """Arrival of the last list, event or bookmark; None before the first list. During
        ``on_list`` it is still the previous one: the start of the gap that list closes."""

    @property
    def resource_version(self) -> str | None:
        return self._rv

    async def run(self) -> None:
        """List and watch forever; raises only ``WatchRefused``."""
        failures = 0
        while True:
            try:
                if self._rv is None:
                    await self._list()
                if await self._watch():
                    failures = 0
                else:
                    failures += 1
                    await self._pause(failures, "the watch ended without a line")
            except WatchExpired as exc:
                self.expired += 1
                self.reconnects += 1
                self._rv = None
                failures += 1
                log.info("pod watch expired (%s): listing again", exc)
                if failures > 1:  # expired again without a good watch between: slow down
                    await self._pause(failures, str(exc))
            except WatchRetryable as exc:
                failures += 1
                self.reconnects += 1
                await self._pause(failures, str(exc))

    async def _pause(self, failures: int, why: str) -> None:
        delay = full_jitter(
            failures - 1, RECONNECT_FIRST_S, self._settings.reconnect_max_s, self._rng
        )
        log.warning("pod watch interrupted (%s); retrying in %.2fs", why, delay)
        await asyncio.sleep(delay)

    def _query(self) -> dict[str, Any]:
        s = self._settings
        query: dict[str, Any] = {"field_selector": f"spec.nodeName={s.node}"}
        if s.label_selector:
            query["label_selector"] = s.label_selector
        return query

    async def _request(self, limits: aiohttp.ClientTimeout, **query: Any) -> Any:
        """Send a list or watch request; the raw aiohttp response."""
        ns = self._settings.namespace
        kwargs = {**self._query(), **query, "_preload_content": False, "_request_timeout": limits}
        try:
            if ns is None:
                return await self._core.list_pod_for_all_namespaces(**kwargs)
            return await self._core.list_namespaced_pod(ns, **kwargs)
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise WatchRetryable(f"no answer from the API server in time: {exc!r}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise WatchRetryable(f"cannot reach the API server: {exc!r}") from exc

    async def _list(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=self._settings.inactivity_timeout_s, sock_connect=CONNECT_TIMEOUT_S
        )
        response = await self._request(timeout)
        try:
            try:
                raw = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise WatchRetryable(f"pod list interrupted: {exc!r}") from exc
            stamp = Stamp(wall_ns(), mono_ns())
            body = _decode(raw)
            if response.status != 200:
                raise _status_error(response.status, body)
        finally:
            response.release()
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise WatchRetryable("the pod list is not a PodList")
        self.lists += 1
        self._handler.on_list(body["items"], stamp)
        self.in_sync_at = stamp
        self._rv = str((body.get("metadata") or {}).get("resourceVersion") or "") or None
        if self._rv is None:
            raise WatchRetryable("the pod list has no resourceVersion")

    async def _watch(self) -> bool:
        """One watch request from the current resourceVersion; False if it gave nothing."""
        s = self._settings
        loop = asyncio.get_running_loop()
        started = loop.time()
        delivered = False
        # sock_read bounds every wait for the server, from the request to the response
        # headers and then between reads of the stream, so a server that accepts the
        # watch and never answers is a hung connection like one that stops mid-stream.
        # No total: a healthy watch lasts until the server's timeoutSeconds.
        response = await self._request(
            aiohttp.ClientTimeout(
                total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=s.inactivity_timeout_s
            ),
            watch=True,
            resource_version=self._rv,
            allow_watch_bookmarks=True,
            timeout_seconds=s.watch_timeout_s,
        )
        try:
            if response.status != 200:
                raise _status_error(response.status, _decode(await response.read()))
            self.watches += 1
            while True:
                try:
                    line = await response.content.readline()
                except LineTooLong as exc:  # a line beyond aiohttp's read buffer
                    raise WatchRetryable(f"unreadable watch line: {exc}") from exc
                # Stamp first: the event's time is its arrival, not its processing.
                stamp = Stamp(wall_ns(), mono_ns())
                if not line:
                    break
                delivered = True
                self._dispatch(line, stamp)
                # A read from the buffer does not yield: let the prober run between
                # the events of a burst instead of after all of them.
                await asyncio.sleep(0)
        except TimeoutError as exc:  # sock_read: aiohttp's SocketTimeoutError
            raise WatchRetryable(f"no event or bookmark for {s.inactivity_timeout_s:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise WatchRetryable(f"watch connection lost: {exc!r}") from exc
        finally:
            response.close()
        return delivered or loop.time() - started >= QUICK_END_S

    def _dispatch(self, line: bytes, stamp: Stamp) -> None:
        event = _decode(line)
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise WatchRetryable(f"malformed watch line: {line[:120]!r}")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            raise _status_error(int(obj.get("code") or 500), obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.bookmarks += 1
            self.in_sync_at = stamp
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.events += 1
            self._handler.on_event(kind, obj, stamp)
            self.in_sync_at = stamp
        else:
            log.warning("ignoring a watch event of unknown type %r", kind)
        if rv:
            self._rv = str(rv)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")

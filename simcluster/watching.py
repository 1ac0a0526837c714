"""Watch streams: newline-delimited JSON events over chunked HTTP.

The semantics are the real API server's, because rtbench's agent and kubectl are
tested against them (see store.py for the resourceVersion rules):

- Each event is one line ``{"type": ..., "object": ...}``, written and flushed
  on its own.
- With a field or label selector, a MODIFIED object that starts matching arrives
  as ADDED and one that stops matching as DELETED (the previous content with the
  new resourceVersion), exactly as the real watch cache converts them.
- A resourceVersion older than the history gets one ERROR event carrying a 410
  Expired Status, then the stream ends (HTTP 200, as a real server answers).
- ``allowWatchBookmarks`` adds a BOOKMARK every ``bookmark_interval`` seconds and
  one just before the stream ends at its timeout; a bookmark's resourceVersion
  is sent only after every event up to it, so resuming from it loses nothing.
- ``sendInitialEvents`` ends the synthetic ADDED events with a BOOKMARK
  annotated ``k8s.io/initial-events-end``.
- A dropped watch (fault injection) is cut mid-stream, like a lost connection.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .errors import Expired
from .objects import Obj
from .registry import matcher
from .resources import ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import Event, EventType, Store, WatchClosed, Watcher

Render = Callable[[Obj], Obj]


@dataclass(frozen=True)
class WatchRequest:
    rtype: ResourceType
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    since: int | None
    """None: start with the current state as synthetic ADDED events."""
    timeout: float
    bookmarks: bool
    initial_events_end: bool


def _line(etype: str, obj: Obj) -> bytes:
    return json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n"


class WatchStream:
    def __init__(
        self,
        request: web.Request,
        store: Store,
        watch: WatchRequest,
        *,
        bookmark_interval: float,
        queue_limit: int,
        render: Render | None,
    ) -> None:
        self.request = request
        self.store = store
        self.watch = watch
        self.bookmark_interval = bookmark_interval
        self.queue_limit = queue_limit
        self.render = render
        self.match = matcher(watch.rtype, watch.namespace, watch.labels, watch.fields)
        self.response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        self.response.enable_chunked_encoding()

    async def serve(self) -> web.StreamResponse:
        kind = self.watch.rtype.kind
        try:
            backlog, watcher = self.store.watch([kind], self.watch.since, limit=self.queue_limit)
        except Expired as exc:
            await self.response.prepare(self.request)
            await self.response.write(_line("ERROR", exc.status()))
            await self.response.write_eof()
            return self.response
        try:
            await self.response.prepare(self.request)
            for event in backlog:
                await self._send(event)
            if self.watch.initial_events_end and self.watch.since is None:
                await self._bookmark(initial_end=True)
            if await self._follow(watcher):
                await self.response.write_eof()
            else:
                self._cut()
        finally:
            self.store.unwatch(watcher)
        return self.response

    async def _follow(self, watcher: Watcher) -> bool:
        """Stream live events; False when the connection must be cut (dropped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.watch.timeout
        interval = self.bookmark_interval if self.watch.bookmarks else float("inf")
        next_bookmark = loop.time() + interval
        while True:
            now = loop.time()
            if now >= deadline:
                if self.watch.bookmarks:
                    await self._drain(watcher)
                    await self._bookmark()
                return True
            if now >= next_bookmark:
                await self._drain(watcher)
                await self._bookmark()
                next_bookmark = now + interval
                continue
            batch = await watcher.next_batch(min(deadline, next_bookmark) - now)
            if watcher.closed is WatchClosed.DROPPED:
                return False
            for event in batch:
                await self._send(event)
            if watcher.closed is not None and not watcher.pending():
                return True

    async def _drain(self, watcher: Watcher) -> None:
        while pending := watcher.take_all():
            for event in pending:
                await self._send(event)

    async def _bookmark(self, *, initial_end: bool = False) -> None:
        rtype = self.watch.rtype
        metadata: Obj = {"resourceVersion": str(self.store.resource_version)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": metadata}
        await self.response.write(_line("BOOKMARK", obj))

    async def _send(self, event: Event) -> None:
        converted = self._convert(event)
        if converted is None:
            return
        if isinstance(converted, Event):
            if self.render is None:
                await self.response.write(event.line())
                return
            etype, obj = event.type.value, event.object
        else:
            etype, obj = converted
        if self.render is not None:
            obj = self.render(obj)
        await self.response.write(_line(etype, obj))

    def _convert(self, event: Event) -> Event | tuple[str, Obj] | None:
        """The event as this watch's selectors make the client see it, or None."""
        if event.type is EventType.ADDED:
            return event if self.match(event.object) else None
        if event.type is EventType.DELETED:
            return event if self.match(event.object) else None
        now = self.match(event.object)
        before = event.previous is not None and self.match(event.previous)
        if now and before:
            return event
        if now:
            return ("ADDED", event.object)
        if before:
            assert event.previous is not None
            gone = copy.deepcopy(event.previous)
            gone["metadata"]["resourceVersion"] = str(event.rv)
            return ("DELETED", gone)
        return None

    def _cut(self) -> None:
        """Drop the connection without ending the chunked body, as a network failure would."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()

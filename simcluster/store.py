"""The object store: every object, one global resourceVersion, the watch history.

This is the simulated etcd plus the API server's watch cache, and later rtbench
components are tested against its exact semantics, so they are spelled out:

- One integer counter across all kinds; every write (create, update, delete)
  increments it by one and produces exactly one event, ADDED, MODIFIED or DELETED,
  that carries the new resourceVersion. A DELETED event's object is the last state
  with the deletion's resourceVersion.
- The last ``history_size`` events are kept. A watch from R replays every kept
  event with rv > R, then follows live events. R older than the history (R below
  ``compacted``) raises Expired, as a real server's watch does with 410.
  ``compact()`` drops the whole history (the "expire" fault).
- A watch without R (or R = 0) first gets a synthetic ADDED for every current
  object, then live events. Snapshot and subscription happen in one synchronous
  step, so nothing falls between them.

Every method is synchronous: the event loop is the only writer, so a read-check-
write sequence without an ``await`` in it is atomic. Stored dicts are never
mutated after they are written (writers hand in fresh dicts and readers get deep
copies), which lets watchers share one event object.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import AlreadyExists, Conflict, Expired, NotFound
from .objects import Obj
from .resources import BY_KIND


class EventType(enum.StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, eq=False)
class Event:
    type: EventType
    kind: str
    rv: int
    object: Obj
    """The object after the write (read-only)."""
    previous: Obj | None
    """The object before the write, for MODIFIED and DELETED (read-only)."""
    _json: list[bytes] = field(default_factory=list, repr=False)

    def line(self) -> bytes:
        """The event as one line of a watch stream, serialised once for all watchers."""
        if not self._json:
            body = {"type": self.type.value, "object": self.object}
            self._json.append(json.dumps(body, separators=(",", ":")).encode() + b"\n")
        return self._json[0]


class WatchClosed(enum.Enum):
    """Why a watcher stopped receiving events."""

    OVERFLOW = "overflow"
    DROPPED = "dropped"
    SHUTDOWN = "shutdown"
    CLOSED = "closed"


class Watcher:
    """One subscription to store events: a replay backlog, then live events.

    Bounded: a watcher that falls ``limit`` events behind is closed with
    OVERFLOW, as a real API server closes a watch that cannot keep up; the client
    resumes from its last resourceVersion.
    """

    def __init__(self, kinds: frozenset[str], after: int, limit: int | None) -> None:
        self.kinds = kinds
        self.after = after
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self.closed: WatchClosed | None = None

    def deliver(self, event: Event) -> None:
        if self.closed is not None or event.kind not in self.kinds or event.rv <= self.after:
            return
        if self._limit is not None and len(self._queue) >= self._limit:
            self.close(WatchClosed.OVERFLOW)
            return
        self._queue.append(event)
        self._wakeup.set()

    def close(self, reason: WatchClosed) -> None:
        if self.closed is None:
            self.closed = reason
        self._wakeup.set()

    @property
    def is_client(self) -> bool:
        """Client (HTTP) watches are bounded; in-process subscriptions are not."""
        return self._limit is not None

    def pending(self) -> int:
        return len(self._queue)

    def take_all(self) -> list[Event]:
        """Every queued event, without waiting."""
        events = list(self._queue)
        self._queue.clear()
        if self.closed is None:
            self._wakeup.clear()
        return events

    async def next_batch(self, wait: float | None = None) -> list[Event]:
        """Queued events, waiting up to ``wait`` seconds for at least one.

        Returns an empty list on timeout or once closed and drained.
        """
        if not self._queue and self.closed is None:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), wait)
            except TimeoutError:
                return []
        return self.take_all()


class Store:
    def __init__(self, history_size: int = 10000) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {k: {} for k in BY_KIND}
        self._rv = 0
        self._history: deque[Event] = deque()
        self._history_size = history_size
        self._compacted = 0
        self._watchers: set[Watcher] = set()

    # -- reading ---------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current (highest written) resourceVersion."""
        return self._rv

    @property
    def compacted(self) -> int:
        """Every resourceVersion below this is gone from the history."""
        return self._compacted

    @property
    def history_length(self) -> int:
        return len(self._history)

    @property
    def watcher_count(self) -> int:
        """Open client (HTTP) watches."""
        return sum(1 for w in self._watchers if w.is_client)

    def history(self, kind: str | None = None, *, after: int = 0) -> list[Event]:
        """The retained events (of ``kind``) with rv > ``after``, oldest first."""
        return [e for e in self._history if e.rv > after and (kind is None or e.kind == kind)]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A deep copy of the object, or None."""
        obj = self._objects[kind].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def peek(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The stored object itself; callers must not mutate it."""
        return self._objects[kind].get((namespace, name))

    def items(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """The stored objects of ``kind`` (read-only), sorted by namespace and name."""
        objs = self._objects[kind]
        keys = sorted(k for k in objs if namespace is None or k[0] == namespace)
        return [objs[k] for k in keys]

    def count(self, kind: str) -> int:
        return len(self._objects[kind])

    # -- writing ---------------------------------------------------------------

    def create(self, kind: str, obj: Obj) -> Obj:
        """Store a new object (taking ownership of ``obj``); returns a copy."""
        key = _key(obj)
        if key in self._objects[kind]:
            raise AlreadyExists(f"{kind} {key[1]!r} already exists", name=key[1])
        return self._write(EventType.ADDED, kind, key, obj, None)

    def update(self, kind: str, obj: Obj, *, expect_rv: str | None = None) -> Obj:
        """Replace an existing object; ``expect_rv`` is an optimistic-lock precondition."""
        key = _key(obj)
        old = self._objects[kind].get(key)
        if old is None:
            raise NotFound(f"{kind} {key[1]!r} not found", name=key[1])
        if expect_rv is not None and expect_rv != old["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified", name=key[1])
        return self._write(EventType.MODIFIED, kind, key, obj, old)

    def delete(self, kind: str, namespace: str, name: str, *, uid: str | None = None) -> Obj:
        """Remove an object; ``uid`` guards against removing a same-named successor."""
        key = (namespace, name)
        old = self._objects[kind].get(key)
        if old is None or (uid is not None and old["metadata"].get("uid") != uid):
            raise NotFound(f"{kind} {name!r} not found", name=name)
        final = copy.deepcopy(old)
        return self._write(EventType.DELETED, kind, key, final, old)

    def _write(
        self, etype: EventType, kind: str, key: tuple[str, str], obj: Obj, old: Obj | None
    ) -> Obj:
        self._rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._rv)
        if etype is EventType.DELETED:
            del self._objects[kind][key]
        else:
            self._objects[kind][key] = obj
        event = Event(etype, kind, self._rv, obj, old)
        self._history.append(event)
        while len(self._history) > self._history_size:
            self._compacted = self._history.popleft().rv
        for watcher in list(self._watchers):
            watcher.deliver(event)
            if watcher.closed is not None:
                self._watchers.discard(watcher)
        return copy.deepcopy(obj)

    # -- watching --------------------------------------------------------------

    def watch(
        self, kinds: Iterable[str], since: int | None, *, limit: int
    ) -> tuple[list[Event], Watcher]:
        """Subscribe to ``kinds``: the replay backlog and the live watcher.

        ``since`` None: synthetic ADDED events for every current object. Otherwise
        every retained event with rv > since; Expired when since is older than
        the history.
        """
        kindset = frozenset(kinds)
        if since is None:
            backlog = [
                Event(EventType.ADDED, kind, int(obj["metadata"]["resourceVersion"]), obj, None)
                for kind in sorted(kindset)
                for obj in self.items(kind)
            ]
            after = self._rv
        else:
            if since < self._compacted:
                raise Expired(f"too old resource version: {since} ({self._compacted})")
            backlog = [e for e in self._history if e.rv > since and e.kind in kindset]
            after = max(since, self._rv)
        watcher = Watcher(kindset, after, limit)
        self._watchers.add(watcher)
        return backlog, watcher

    def subscribe(self, kinds: Iterable[str]) -> Watcher:
        """A live, unbounded subscription for in-process controllers."""
        watcher = Watcher(frozenset(kinds), self._rv, None)
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher, reason: WatchClosed = WatchClosed.CLOSED) -> None:
        watcher.close(reason)
        self._watchers.discard(watcher)

    def close_watchers(self, reason: WatchClosed, *, clients_only: bool = True) -> int:
        """Close every client watcher (every watcher, with ``clients_only`` False)."""
        victims = [w for w in self._watchers if w.is_client or not clients_only]
        for watcher in victims:
            self.unwatch(watcher, reason)
        return len(victims)

    def compact(self) -> int:
        """Drop the whole history: every older resourceVersion now gets 410."""
        self._history.clear()
        self._compacted = self._rv
        return self._compacted


def _key(obj: Obj) -> tuple[str, str]:
    metadata: dict[str, Any] = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata["name"]))

"""The container runtime's own account of each pod: sandbox and container events.

On a real node, containerd publishes TaskCreate/TaskStart/TaskExit with
nanosecond times, and rtbench's agent reads them for the sandbox_started and
container_started phases, which Kubernetes timestamps only to the second. The
simulated kubelets record the same moments (wall clock, ns) here; tests and a
later containerd-like event stream read them with ``events()`` or follow them
with ``subscribe()``.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any


class RuntimeEventKind(enum.StrEnum):
    SANDBOX_CREATED = "sandbox_created"
    SANDBOX_STARTED = "sandbox_started"
    CONTAINER_CREATED = "container_created"
    CONTAINER_STARTED = "container_started"
    CONTAINER_EXITED = "container_exited"
    SANDBOX_STOPPED = "sandbox_stopped"


@dataclass(frozen=True)
class RuntimeEvent:
    seq: int
    """Position in the log, from 1; ``events(since=seq)`` resumes after it."""
    time_ns: int
    """Wall-clock time (time.time_ns) at which the runtime step completed."""
    kind: RuntimeEventKind
    node: str
    namespace: str
    pod: str
    pod_uid: str
    sandbox_id: str
    container: str | None = None
    container_id: str | None = None
    pid: int | None = None
    exit_code: int | None = None
    ip: str | None = None
    """At sandbox_started: the pod's address (the node's own for a hostNetwork pod)."""
    host_network: bool = False
    """At sandbox_started: the sandbox shares the node's network namespace."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return data


class RuntimeEventLog:
    """A bounded, ordered log of runtime events with live subscriptions."""

    def __init__(self, limit: int = 100_000) -> None:
        self._events: deque[RuntimeEvent] = deque(maxlen=limit)
        self._seq = 0
        self._subscribers: set[asyncio.Queue[RuntimeEvent | None]] = set()

    def record(
        self,
        kind: RuntimeEventKind,
        *,
        node: str,
        namespace: str,
        pod: str,
        pod_uid: str,
        sandbox_id: str,
        container: str | None = None,
        container_id: str | None = None,
        pid: int | None = None,
        exit_code: int | None = None,
        ip: str | None = None,
        host_network: bool = False,
        time_ns: int | None = None,
    ) -> RuntimeEvent:
        self._seq += 1
        event = RuntimeEvent(
            seq=self._seq,
            time_ns=time.time_ns() if time_ns is None else time_ns,
            kind=kind,
            node=node,
            namespace=namespace,
            pod=pod,
            pod_uid=pod_uid,
            sandbox_id=sandbox_id,
            container=container,
            container_id=container_id,
            pid=pid,
            exit_code=exit_code,
            ip=ip,
            host_network=host_network,
        )
        self._events.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)
        return event

    def events(
        self, *, since: int = 0, node: str | None = None, pod_uid: str | None = None
    ) -> list[RuntimeEvent]:
        """Retained events after sequence number ``since``, optionally filtered."""
        return [
            e
            for e in self._events
            if e.seq > since
            and (node is None or e.node == node)
            and (pod_uid is None or e.pod_uid == pod_uid)
        ]

    async def subscribe(self, *, since: int = 0) -> AsyncIterator[RuntimeEvent]:
        """Retained events after ``since``, then live ones until ``close()``."""
        queue: asyncio.Queue[RuntimeEvent | None] = asyncio.Queue()
        backlog = self.events(since=since)
        self._subscribers.add(queue)
        try:
            for event in backlog:
                yield event
            while (event_or_end := await queue.get()) is not None:
                yield event_or_end
        finally:
            self._subscribers.discard(queue)

    def close(self) -> None:
        """End every subscription (the cluster is stopping)."""
        for queue in self._subscribers:
            queue.put_nowait(None)

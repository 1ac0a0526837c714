"""Runtime phases from containerd: when each pod's sandbox and containers were created,
started and exited, to the nanosecond.

Kubernetes reports a container start with 1 s resolution and up to a PLEG relist
late; containerd publishes it as it happens. This reader subscribes to
containerd's task and container events (agent/containerd.py), finds the pod of
each task through the container's CRI labels (``io.kubernetes.pod.uid``, and
``io.cri-containerd.kind`` = sandbox or container), and emits:

| containerd topic | kind sandbox      | kind container                             |
|------------------|-------------------|--------------------------------------------|
| /tasks/create    | sandbox_created   | container_created                          |
| /tasks/start     | sandbox_started   | container_started                          |
| /tasks/exit      | (nothing)         | container_exited (attribute ``exit_code``) |

with ``source=SOURCE_CONTAINERD``, ``time_ns`` = the envelope's timestamp (for an
exit: the task's ``exited_at``), uncertainty 0, and the container's name in
``container``. Each (container id, phase) is emitted at most once. Containers
without those labels (``ctr run`` by hand, Docker) and other namespaces are
ignored; exits of exec'd processes too.

The labels come from ``Containers/Get``, once per container (cached until
``/containers/delete``). Every sandbox start also asks CRI, on the same socket,
for the pod's address, so the prober starts before the app can answer
(agent/podaddresses.py; ``on_address``). Joining observations to the watch's pods (held until
the watch sees the pod, dropped after a limit, once each) is
agent/runtimephases.py. The envelopes are handled one at a time, in order, by
one task, fed by the stream reader: what arrived before a lost connection is
still handled.

Connection and recovery. containerd is optional: when it is absent, not a
socket, unreadable, or goes away, one WARNING says so and the reader retries
quietly (jittered backoff, rtbench/backoff.py), looking the socket up again each
time, so a containerd that appears later is picked up. The backoff and the
warning start over only once a connection proved itself (delivered an envelope
or lived ``STABLE_S``): a containerd that accepts the lists but fails Subscribe
at once is retried with a growing backoff and DEBUG lines, not at 10 Hz. On
every connect it subscribes first, then lists containers and tasks, and
recovers what it missed:

- an exit: a stopped task keeps its exact ``exited_at`` until it is deleted, so
  it is emitted exactly (attribute ``via=recovery``). The CRI plugin deletes a
  task as soon as it exits, so on a kubelet's node this rarely helps; a
  ``/tasks/delete`` of the container's own process also carries ``exited_at``
  and is used instead (``via=delete``) when no exit came before it (only for a
  container whose start was seen: a task deleted unstarted did not exit);
- a create or start that happened while disconnected: containerd keeps no time
  for it. All that is known is a bracket, from the later of the container's
  ``created_at`` and the end of what the previous connection surely saw (less
  ``ORDER_MARGIN_NS``), to the task's exit or the moment of the list. It is
  emitted (``time_ns`` = the end, ``uncertainty_ns`` = the width,
  ``recovered=bounds``) only when the bracket is at most ``max_uncertainty_ns``
  wide, and only after the new stream had ``SETTLE_S`` to deliver the exact
  event instead; otherwise it is counted as unrecoverable and left to the pod
  watch. A start is bracketed only for a task that has started (RUNNING,
  PAUSED, PAUSING, STOPPED); a CREATED task's start is still to come on the
  stream, an UNKNOWN one's is unrecoverable. What a connection surely saw
  advances only once its brackets were handled: a connection lost within
  ``SETTLE_S`` leaves the next one the same lower bound;
- an exit whose task was deleted while disconnected: its time went with the
  task; left to the pod watch.

Not recovered either: anything about a container created and deleted entirely
while disconnected (its labels are gone with it). A containerd that hangs
without closing its socket looks like a quiet node: the reader cannot tell.
containerd 2.x runtimes that use the shim sandboxer (sandboxed runtimes such as
Kata with ``sandboxer = "shim"``) publish ``/sandboxes/*`` events instead of
running a pause task: their sandbox phases are not read yet (the pod watch
reports them), their containers' phases are.

Times. Creates and starts carry the envelope's timestamp, taken by containerd
as it publishes. An exit carries TaskExit's ``exited_at`` instead, taken by
the shim when it reaped the process: the envelope is stamped when containerd
forwards it, later by the shim's publish path (and after a containerd restart,
when the shim re-sends it, by the whole outage); the envelope time is kept in
the ``published_ns`` attribute. Bracketing assumes the envelopes arrive in
timestamp order, which the shims' separate publish paths do not quite
guarantee, hence the ``ORDER_MARGIN_NS`` taken off the lower bound.

Duplicates. An agent restarted while a stopped task still exists recovers its
exit again (``via=recovery``) although the previous run already sent it: both
carry the same ``exited_at``, the journal keeps both and the collector's
summary picks the earliest event per source and phase (collector/summaries.py),
so the number does not change (at most by the difference of the two runs' clock
corrections). A bracketed start after a restart ends at or after the exact
one, so the exact one stays the earliest.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from rtbench.backoff import full_jitter, hold_group_open, raise_if_cancelled
from rtbench.clock import mono_ns, wall_ns
from rtbench.containerd import containers_pb2, events_pb2, task_types_pb2
from rtbench.v1 import events_pb2 as rt

from . import containerd as ctd
from .outbox import Outbox
from .podaddresses import PodAddress, SandboxAddresses
from .runtimephases import (
    HOLD_MAX,
    HOLD_S,
    CriContainer,
    Observation,
    PhaseEmitter,
    PodLookup,
    RuntimeCounters,
    recover,
    remember,
)

__all__ = ["RuntimeEvents"]

log = logging.getLogger(__name__)

RECOVERED_MAX_UNCERTAINTY_NS = 1_000_000_000
"""Default widest bracket emitted for a recovered create or start. The collector prefers
containerd's events to the watch's whatever their uncertainty, and the watch knows a
start within about 1 s (1 s timestamps, PLEG relist): a wider bracket would replace a
better observation with a worse one."""
ORDER_MARGIN_NS = 50_000_000
"""Taken off a bracket's lower bound: shims publish through their own connections, so
an envelope may arrive a little after a later-stamped one (seen: a few ms)."""
STABLE_S = 5.0
"""A connection that lived this long (or delivered an envelope) proved itself: its loss
is warned about again and retried from the first backoff step."""
SETTLE_S = 1.0
"""After a connect, how long the stream may deliver exact events before bracketed
recoveries of the same phases are emitted in their place."""
RECONNECT_FIRST_S = 0.2
"""First backoff ceiling: a restarted containerd listens again within a second or two."""
RECONNECT_MAX_S = 5.0
"""Backoff cap: a containerd that comes back is read again within 5 s, and an absent
socket costs one stat() per few seconds."""
SWEEP_S = 1.0
"""Period of the check for held observations past ``hold_s``."""
_PHASES = {
    (ctd.TASK_CREATE, "sandbox"): rt.PHASE_SANDBOX_CREATED,
    (ctd.TASK_START, "sandbox"): rt.PHASE_SANDBOX_STARTED,
    (ctd.TASK_CREATE, "container"): rt.PHASE_CONTAINER_CREATED,
    (ctd.TASK_START, "container"): rt.PHASE_CONTAINER_STARTED,
    (ctd.TASK_EXIT, "container"): rt.PHASE_CONTAINER_EXITED,
    (ctd.TASK_DELETE, "container"): rt.PHASE_CONTAINER_EXITED,
}


@dataclass
class _End:
    error: ctd.ContainerdError


@dataclass
class _Settle:
    observations: list[Observation] = field(default_factory=list)
    listed_at: int = 0


_Item = ctd.Decoded | _End | _Settle
"""What the stream reader and the settle timer hand to the one handler, in order."""


class RuntimeEvents:
    """Reads containerd's events for the pods of this node; records go to the outbox."""

    def __init__(
        self,
        outbox: Outbox,
        pods: PodLookup,
        *,
        socket: str,
        namespace: str,
        node: str = "",
        on_container: Callable[[str, int, int], None] | None = None,
        on_address: Callable[[PodAddress], None] | None = None,
        hold_s: float = HOLD_S,
        hold_max: int = HOLD_MAX,
        max_uncertainty_ns: int = RECOVERED_MAX_UNCERTAINTY_NS,
        rng: random.Random | None = None,
    ) -> None:
        self._socket = socket
        self._namespace = namespace
        self._node = node
        self._max_uncertainty_ns = max_uncertainty_ns
        self._rng = rng or random.Random()
        self.counters = RuntimeCounters()
        self._phases = PhaseEmitter(
            outbox, pods, self.counters, on_container=on_container, hold_s=hold_s, hold_max=hold_max
        )
        self.addresses = SandboxAddresses(on_address) if on_address is not None else None
        """CRI lookups of each started sandbox's address; None: not wanted."""
        self._containers: OrderedDict[str, CriContainer | None] = OrderedDict()
        self._covered_ns = 0
        """Up to when the last connection surely delivered every event (0: never connected)."""
        self._proved = False
        """The current connection delivered an envelope or lived ``STABLE_S``."""

    async def run(self) -> None:
        """Reads containerd forever, reconnecting; returns only when cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._connect_loop(), name="containerd events")
            group.create_task(self._sweep_loop(), name="containerd hold")

    def pod_seen(self, uid: str) -> None:
        """The watch knows this pod now: emit what was held for it."""
        self._phases.pod_seen(uid)

    # -- connection --------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        attempt, warned = 0, False
        while True:
            self._proved = False
            began = mono_ns()
            try:
                socket = await asyncio.to_thread(ctd.resolve_socket, self._socket)
                async with ctd.ContainerdClient(socket, self._namespace) as client:
                    await self._session(client, socket)
                problem = "the session ended"  # _session only ends by raising
            except ctd.ContainerdError as exc:
                raise_if_cancelled()
                problem = str(exc)
            self.counters.failures += 1
            if self.counters.connected:
                self.counters.connected = False
                if self._proved or mono_ns() - began >= STABLE_S * 1e9:
                    attempt, warned = 0, False
                    problem = f"connection lost ({problem})"
                else:  # lists answered, the stream failed at once: keep backing off
                    problem = f"the event stream failed at once ({problem})"
            if not warned:
                log.warning(
                    "containerd: %s; sandbox and container phases come from the pod watch "
                    "until it is back (retrying quietly)",
                    problem,
                )
                warned = True
            else:
                log.debug("containerd: %s; retrying", problem)
            await asyncio.sleep(full_jitter(attempt, RECONNECT_FIRST_S, RECONNECT_MAX_S, self._rng))
            attempt += 1

    async def _session(self, client: ctd.ContainerdClient, socket: object) -> None:
        """Subscribe, recover what was missed, then follow the stream until it fails."""
        subscription = client.subscribe()
        try:
            listed_at = wall_ns()
            containers = await client.list_containers()
            tasks = await client.list_tasks()
            self.counters.connected = True
            self.counters.connects += 1
            recovered, unrecoverable = self.counters.recovered, self.counters.unrecoverable
            bracketed = self._recover(containers, tasks, listed_at)
            log.info(
                "containerd: connected to %s (namespace %s): %d containers, %d tasks; "
                "%d exits recovered exactly, %d phases bracketed, %d missed phases left to "
                "the pod watch",
                socket,
                self._namespace,
                len(containers),
                len(tasks),
                self.counters.recovered - recovered,
                len(bracketed),
                self.counters.unrecoverable - unrecoverable,
            )
            queue: asyncio.Queue[_Item] = asyncio.Queue()
            settle = _Settle(bracketed, listed_at)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read(subscription, queue), name="containerd stream")
                    group.create_task(self._settle(queue, settle), name="containerd settle")
                    group.create_task(self._consume(client, queue), name="containerd handle")
                    if self.addresses is not None:
                        group.create_task(
                            self.addresses.serve(client, socket), name="containerd cri"
                        )
                    await hold_group_open()
            except BaseExceptionGroup as failed:
                if len(failed.exceptions) == 1 and isinstance(failed.exceptions[0], Exception):
                    raise failed.exceptions[0] from None
                raise
        finally:
            subscription.cancel()

    async def _read(self, subscription: ctd.Subscription, queue: asyncio.Queue[_Item]) -> None:
        """Queues envelopes as they arrive; the end goes into the queue too, so that what
        arrived before it is still handled."""
        try:
            async for envelope in subscription.envelopes():
                self._proved = True
                try:
                    queue.put_nowait(ctd.decode(envelope))
                except ctd.ContainerdFailed as exc:  # one bad payload, not a bad stream
                    self.counters.undecodable += 1
                    log.debug("containerd: skipped an event: %s", exc)
        except ctd.ContainerdError as exc:
            queue.put_nowait(_End(exc))

    async def _settle(self, queue: asyncio.Queue[_Item], settle: _Settle) -> None:
        if settle.observations:
            await asyncio.sleep(SETTLE_S)
        queue.put_nowait(settle)

    async def _consume(self, client: ctd.ContainerdClient, queue: asyncio.Queue[_Item]) -> None:
        settled, seen_ns = False, 0
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                raise item.error
            if isinstance(item, _Settle):
                for observation in item.observations:
                    self._phases.offer(observation)
                # Only now: a connection lost before its brackets were offered leaves the
                # next one the old lower bound, which still lies before the missed phases.
                settled = True
                self._covered_ns = max(self._covered_ns, item.listed_at, seen_ns)
            else:
                await self._handle(client, item)
                # Only once handled: an event lost to a failed Containers/Get must stay
                # inside the bracket of the next recovery.
                seen_ns = max(seen_ns, item.published_ns)
                if settled:
                    self._covered_ns = max(self._covered_ns, seen_ns)

    # -- events ------------------------------------------------------------------------------

    async def _handle(self, client: ctd.ContainerdClient, event: ctd.Decoded) -> None:
        self.counters.envelopes += 1
        if event.namespace != self._namespace:
            self.counters.other_namespace += 1
            return
        cid, payload = event.container_id, event.payload
        if event.topic == ctd.CONTAINER_DELETE:
            self._forget(cid)
            return
        if event.topic == ctd.CONTAINER_CREATE:
            await self._container(client, cid)  # labels while the container surely exists
            return
        if payload is None or event.topic not in (
            ctd.TASK_CREATE,
            ctd.TASK_START,
            ctd.TASK_EXIT,
            ctd.TASK_DELETE,
        ):
            return
        time_ns = event.published_ns
        attributes = {"via": "event", "container_id": cid}
        if isinstance(payload, events_pb2.TaskExit | events_pb2.TaskDelete):
            if payload.id not in ("", cid):
                return  # an exec'd process, not the container's own
            if isinstance(payload, events_pb2.TaskDelete):
                exited = self._phases.decided(cid, rt.PHASE_CONTAINER_EXITED)
                started = self._phases.decided(cid, rt.PHASE_CONTAINER_STARTED)
                if exited or not started or not payload.HasField("exited_at"):
                    return  # exited already, or never started (nothing exited)
                attributes["via"] = "delete"
            if payload.HasField("exited_at"):
                time_ns = ctd.timestamp_ns(payload.exited_at)
            attributes["exit_code"] = str(payload.exit_status)
            attributes["published_ns"] = str(event.published_ns)
        attributes["pid"] = str(getattr(payload, "pid", 0))
        info = await self._container(client, cid)
        if info is None:
            self.counters.ignored += 1
            return
        phase = _PHASES.get((event.topic, info.kind))
        if phase == rt.PHASE_SANDBOX_STARTED and self.addresses is not None:
            self.addresses.sandbox_started(cid, info.pod_uid, time_ns)
        if phase is not None:
            self._phases.offer(Observation(info, phase, time_ns, 0, attributes))

    async def _container(self, client: ctd.ContainerdClient, cid: str) -> CriContainer | None:
        if cid in self._containers:
            return self._containers[cid]
        found = await client.get_container(cid)
        info = CriContainer.parse(found, self._node) if found is not None else None
        remember(self._containers, cid, info)
        return info

    def _forget(self, cid: str) -> None:
        self._containers.pop(cid, None)
        self._phases.forget(cid)

    def _recover(
        self,
        containers: list[containers_pb2.Container],
        tasks: list[task_types_pb2.Process],
        listed_at: int,
    ) -> list[Observation]:
        """Emits the exact exits of stopped tasks; returns the bracketed creates and starts
        (to be offered once the stream has settled)."""
        for container in containers:
            remember(self._containers, container.id, CriContainer.parse(container, self._node))
        lower_ns = max(0, self._covered_ns - ORDER_MARGIN_NS) if self._covered_ns else 0
        return recover(
            self._phases,
            self.counters,
            self._containers,
            tasks,
            listed_at=listed_at,
            lower_ns=lower_ns,
            max_uncertainty_ns=self._max_uncertainty_ns,
        )

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_S, self._phases.hold_s))
            self._phases.sweep()

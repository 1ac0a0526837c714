"""Pod addresses from the runtime: each new sandbox's IP, asked of CRI the moment it starts.

The prober must be probing before the application can answer, or its bracket
measures nothing. The pod's IP in the API arrives with the kubelet's status
update after a PLEG relist, usually after the application listens; the runtime
knows it as soon as the sandbox's network exists. So, while the runtime-event
reader (agent/runtimeevents.py) is connected to containerd, every sandbox start
it sees (``sandbox_started``) is looked up with CRI ``PodSandboxStatus``
(agent/cri.py) and the pod's address handed to the observer (``on_address``),
which points the prober at it. NOT_FOUND right after the start event means CRI
has not stored the sandbox yet (containerd adds it when RunPodSandbox returns):
the lookup is retried quickly (``RETRY_FIRST_S``, doubling to ``RETRY_MAX_S``)
for up to ``GIVE_UP_S``. After every (re)connect, the sandboxes that are ready
are listed and looked up too, so pods that started while the reader was away
get their address.

A hostNetwork pod's sandbox has no IP of its own (network namespace NODE): its
address is the node's, which the observer fills in. A sandbox with neither an
IP nor the node's namespace is counted (``no_ip``) and left to the API's podIP.
When the socket serves no CRI (a containerd with its CRI plugin disabled, or a
runtime that is not containerd), one WARNING says so and pod addresses come from
the API's podIP, as they did before; every first_response event names the
source of its address (``address_source``).

Lookups run concurrently (at most ``CONCURRENCY``), each in its own task of the
session, so a slow one delays no other and never the event stream; a lookup
that fails is counted and logged at DEBUG, and its pod falls back to the API.
Lookups queued while the reader is disconnected wait for the next session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from rtbench.clock import mono_ns, wall_ns

from .containerd import ContainerdClient, ContainerdError
from .cri import CriClient, CriUnavailable, SandboxNetwork, runtime_description

__all__ = ["AddressCounters", "PodAddress", "SandboxAddresses"]

log = logging.getLogger("agent.runtimeevents")  # one logger for the whole reader

RETRY_FIRST_S = 0.002
"""First wait after NOT_FOUND: containerd stores the sandbox within milliseconds of the
pause task's start event, and every millisecond of waiting is one the prober is not
probing."""
RETRY_MAX_S = 0.05
"""Longest wait between lookups of one sandbox."""
GIVE_UP_S = 5.0
"""A sandbox CRI still does not know after this long is left to the API's podIP (a
sandbox whose RunPodSandbox failed after its task started ends this way)."""
CONCURRENCY = 32
"""Lookups in flight at once: a 110-pod node's burst, without a thousand open calls."""
QUEUE_MAX = 10_000
"""Lookups waiting at once (while disconnected); beyond it the newest are counted and
dropped, and their pods fall back to the API's podIP."""


@dataclass(frozen=True)
class PodAddress:
    """Where a pod's sandbox can be reached, as the runtime said."""

    pod_uid: str
    sandbox_id: str
    ip: str
    """Empty for a hostNetwork pod: its address is the node's."""
    host_network: bool
    sandbox_started_ns: int
    """containerd's time of the sandbox's start (nothing of the pod can answer before it);
    0 when the sandbox was found by a list after a reconnect."""
    known_ns: int
    """When the agent learned the address (wall clock)."""


@dataclass
class AddressCounters:
    """What the lookups did, for tests and the curious."""

    cri: bool | None = None
    """Whether the socket serves CRI (None: not asked yet)."""
    runtime: str = ""
    """The runtime CRI named (Version), for the log."""
    resolved: int = 0
    host_network: int = 0
    no_ip: int = 0
    not_found: int = 0
    """Sandboxes CRI did not know within ``GIVE_UP_S``."""
    failures: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class _Lookup:
    sandbox_id: str
    pod_uid: str
    started_ns: int


class SandboxAddresses:
    """Looks up each started sandbox's address with CRI and reports it."""

    def __init__(
        self,
        on_address: Callable[[PodAddress], None],
        *,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
        give_up_s: float = GIVE_UP_S,
    ) -> None:
        self._on_address = on_address
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._give_up_s = give_up_s
        self.counters = AddressCounters()
        self._queue: asyncio.Queue[_Lookup] = asyncio.Queue(QUEUE_MAX)
        self._warned = False

    def sandbox_started(self, sandbox_id: str, pod_uid: str, started_ns: int) -> None:
        """A sandbox started (containerd's event): look its address up."""
        if self.counters.cri is False:
            return  # this runtime serves no CRI: the API's podIP it is
        try:
            self._queue.put_nowait(_Lookup(sandbox_id, pod_uid, started_ns))
        except asyncio.QueueFull:
            self.counters.dropped += 1

    async def serve(self, client: ContainerdClient, socket: object) -> None:
        """Serve lookups over one connection until cancelled (returns at once when the
        socket serves no CRI)."""
        cri = CriClient(client)
        try:
            version = await cri.version()
        except CriUnavailable as exc:
            self._no_cri(socket, str(exc))
            return
        except ContainerdError as exc:
            self.counters.failures += 1
            log.debug(
                "CRI Version on %s failed: %s; addresses wait for the next connect", socket, exc
            )
            return
        if self.counters.cri is not True:
            log.info(
                "CRI: %s on %s; pod addresses come from the runtime as sandboxes start",
                runtime_description(version),
                socket,
            )
        self.counters.cri, self.counters.runtime = True, runtime_description(version)
        self._warned = False
        slots = asyncio.Semaphore(CONCURRENCY)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._recover(cri, slots), name="cri list")
            while True:
                lookup = await self._queue.get()
                await slots.acquire()
                group.create_task(self._resolve(cri, lookup, slots), name="cri lookup")

    def _no_cri(self, socket: object, problem: str) -> None:
        self.counters.cri = False
        while not self._queue.empty():
            self._queue.get_nowait()
        if not self._warned:
            self._warned = True
            log.warning(
                "%s on %s: pod addresses come from the API's podIP, which a kubelet publishes "
                "about a relist after the app starts (first responses are then bracketed from "
                "the container's creation)",
                problem,
                socket,
            )

    async def _recover(self, cri: CriClient, slots: asyncio.Semaphore) -> None:
        """The ready sandboxes after a connect: their starts may have gone unseen."""
        try:
            ids = await cri.ready_sandboxes()
        except ContainerdError as exc:
            self.counters.failures += 1
            log.debug("CRI ListPodSandbox failed: %s", exc)
            return
        for sandbox_id in ids:
            async with slots:
                await self._lookup(cri, _Lookup(sandbox_id, "", 0), wait=False)

    async def _resolve(self, cri: CriClient, lookup: _Lookup, slots: asyncio.Semaphore) -> None:
        try:
            await self._lookup(cri, lookup, wait=True)
        finally:
            slots.release()

    async def _lookup(self, cri: CriClient, lookup: _Lookup, *, wait: bool) -> None:
        deadline = mono_ns() + int(self._give_up_s * 1e9)
        delay = self._retry_first_s
        try:
            while (network := await cri.sandbox(lookup.sandbox_id)) is None:
                if not wait or mono_ns() >= deadline:
                    self.counters.not_found += 1
                    log.debug(
                        "CRI does not know sandbox %s; its pod's address comes from the API",
                        lookup.sandbox_id,
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(2 * delay, self._retry_max_s)
        except ContainerdError as exc:
            self.counters.failures += 1
            log.debug("CRI PodSandboxStatus %s failed: %s", lookup.sandbox_id, exc)
            return
        self._found(lookup, network)

    def _found(self, lookup: _Lookup, network: SandboxNetwork) -> None:
        uid = network.pod_uid or lookup.pod_uid
        if not network.ready or not uid:
            return  # stopped meanwhile, or not a Kubernetes pod's sandbox
        if not network.ip and not network.host_network:
            self.counters.no_ip += 1
            log.debug("CRI reports no IP for sandbox %s of pod %s", network.sandbox_id, uid)
            return
        self.counters.resolved += 1
        self.counters.host_network += network.host_network
        self._on_address(
            PodAddress(
                pod_uid=uid,
                sandbox_id=network.sandbox_id,
                ip=network.ip,
                host_network=network.host_network,
                sandbox_started_ns=lookup.started_ns,
                known_ns=wall_ns(),
            )
        )

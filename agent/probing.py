"""Node-local HTTP probing: when each pod first answers, and whether it keeps answering.

The pod's own status says when its container started, up to a PLEG period late;
whether the application answers only a request can tell. So from the moment a
pod has an IP the agent probes it from the node until the first 2xx, and then
at a low rate until deletion (availability and latency).

An attempt is a TCP connect, and only when that succeeds a minimal HTTP/1.0 GET
on the same connection (status line read, connection closed). The connect is
made with a non-blocking socket by hand: on loopback and on veth pairs the
kernel settles a connect inside the syscall, so a second ``connect`` returns
"refused" or "connected" at once and a refused attempt, by far the most common
one, costs two syscalls and no event-loop round trip (Linux lets a TCP socket
whose connect was refused connect again, so a waiting pod keeps one socket);
only an attempt still in flight, or one that connected, becomes a task.

When is the first response? The workload's listen time lies in the bracket
[start of the last attempt that failed to connect, moment the successful
attempt's connection was established]; both ends are taken right around the
connect syscalls, so the bracket is as tight as the probing interval.
The first_response event reports the bracket's midpoint as ``time_ns`` and
half its width as ``uncertainty_ns``, so the app became reachable within
``time_ns ± uncertainty_ns``; both ends are kept in its attributes
(``bracket_start_ns``, ``bracket_end_ns``), and the answer's arrival in
``response_ns``. When the last failure did connect (an HTTP error
status from an app still starting), what changed is the app's answer, so the
bracket ends at the arrival of the first 2xx status line instead. When the very
first attempt succeeds there is no failure to bound it: the bracket starts at
the agent's first sight of the pod, ``bracket_start_source=first_sight``;
unless the pod was first seen in a list (``late_since_ns``: its history went
unwatched), when the app may have answered long before: the bracket then starts
at the pod's creation (``before_first_sight``) and the event is marked
``seen_late``, which keeps it out of latencies.
The app cannot answer before its pod's sandbox started, nor before its
container's task was created (containerd's TaskCreate: the runtime has made the
container's process, which runs the app only once started). containerd reports
both (``hint_sandbox``, ``hint_created`` with their times), and a bracket
starting earlier (no failed attempt since, or a sparse one long before) is cut
to begin at the later of them: ``bracket_start_source=sandbox_started`` or
``container_created``. The container's *start* is no such bound: containerd
stamps TaskStart when the runtime's start call has returned, by which time the
app may already listen (seen: by 0.1 ms on the simulator, and gVisor's apps
listen 12-16 ms before StartContainer returns). Hints that arrive before the pod
is tracked (its address not known yet) are kept and applied when tracking
begins, so a start seen early is never lost. A pod whose address came from
the runtime (at its sandbox's start) is probed sparsely (``probe_max_interval_s``)
until containerd reports its container created, and densely from then on: before
that nothing can answer, and in a burst the shared budget is worth more to pods
that can. containerd's word can arrive a few ms after the app already answered,
so while a containerd reader is connected (``start_hints``) a first response
without a create or start yet is held back up to ``START_HINT_WAIT_S`` for it.
Where the pod's address came from is in ``address_source``: the runtime
(``cri``, or ``cri_host_network`` for the node's own address), or the pod's
status in the API (``api_pod_ip``: published after a relist, so the first
attempt often succeeds at once and the bracket reaches back to a start).

Scheduling: one loop serves all pods from two earliest-deadline-first heaps,
pods still waiting for their first response before pods already answering. It
wakes at most once a millisecond (the event loop sleeps in whole milliseconds
anyway) and starts everything due, so its overhead does not grow with the rate.
Every attempt takes a token from a bucket refilled at ``probe_rate``, so a
100-pod burst shares the budget (an overdue pod keeps its early deadline and is
served first next time: round robin under pressure) instead of starving the
node. A waiting pod's interval starts at ``probe_first_interval_s`` and grows
by ``probe_growth`` per failed attempt up to ``probe_max_interval_s``; a
container-started hint from the watch resets it, because the listen is near.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtbench.clock import mono_ns, wall_ns
from rtbench.v1 import events_pb2

from .outbox import Outbox
from .transitions import ADDRESS_FROM_API, SEEN_LATE, ProbeTarget

if TYPE_CHECKING:
    from .observing import ObserveSettings

__all__ = ["Prober"]

BURST_S = 0.005
"""Token bucket depth in seconds of budget: absorbs the jitter of the loop's wakeups
without letting a burst exceed the rate by more than a few milliseconds' worth."""
WAKE_QUANTUM_S = 0.0009
"""Shortest sleep of the scheduling loop; just under the epoll millisecond so that
one loop iteration is one epoll wait."""
MAX_STATUS_LINE = 4096
_CONNECTED = (0, errno.EISCONN)
_IN_FLIGHT = (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN)


@dataclass
class _Attempt:
    start_ns: int
    start: float
    """Loop time at the start, for scheduling."""
    connected_ns: int = 0
    connected_mono_ns: int = 0
    end_ns: int = 0
    end_mono_ns: int = 0
    status: int = 0
    error: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299


class _Pod:
    def __init__(
        self,
        ref: events_pb2.PodRef,
        target: ProbeTarget,
        first_sight_ns: int,
        late_since_ns: int = 0,
    ) -> None:
        self.ref = ref
        self.target = target
        self.first_sight_ns = first_sight_ns
        self.late_since_ns = late_since_ns
        """Nonzero: first seen in a list, so it may have answered before (since then)."""
        self.tracked_ns = wall_ns()
        self.responded = False
        self.interval = 0.0
        self.due = 0.0
        self.seq = 0
        self.in_flight = False
        self.forgotten = False
        self.attempts = 0
        self.refused = 0
        self.timeouts = 0
        self.http_failures = 0
        self.failure_start_ns = 0
        """Start of the last failed attempt before the first success; 0: none yet."""
        self.failure_connected = False
        """Whether that attempt connected (and then failed at the HTTP level)."""
        self.last_ok_start_ns = 0
        self.container_created_ns = 0
        """Earliest creation of an app container's task containerd reported; 0: none."""
        self.container_started = False
        """containerd reported an app container started."""
        self.sandbox_started_ns = 0
        """containerd's start of the pod's sandbox; 0: not known."""
        self.held: _Bracket | None = None
        """The first response, while it waits for containerd's container start."""
        self.outage = False
        self.sock: socket.socket | None = None
        """The socket kept across refused connects while waiting."""

    def close(self) -> None:
        self.forgotten = True
        if self.sock is not None:
            self.sock.close()
            self.sock = None


START_HINT_WAIT_S = 0.1
"""How long a first response waits for containerd's word of the app container (its create
or start, normally a few ms behind) before it is reported without that bound."""
EARLY_MAX = 16_384
"""Pods whose start hints are kept while they are not tracked yet (oldest out first)."""


@dataclass
class _Early:
    """Start hints of a pod that is not tracked yet (no address yet)."""

    container_created_ns: int = 0
    sandbox_started_ns: int = 0


@dataclass
class _Bracket:
    """A first response found, not reported yet: the bracket and its attributes."""

    start: int
    end: int
    end_mono: int
    source: str
    attributes: dict[str, str]


class Prober:
    """Probes every tracked pod's HTTP port; records go to the outbox."""

    def __init__(self, outbox: Outbox, settings: ObserveSettings) -> None:
        self._outbox = outbox
        self._s = settings
        self._pods: dict[str, _Pod] = {}
        self._waiting: list[tuple[float, int, str]] = []
        self._serving: list[tuple[float, int, str]] = []
        self._capacity = max(1.0, settings.probe_rate * BURST_S)
        self._tokens = self._capacity
        self._refilled = 0.0
        self._wakeup: asyncio.Future[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self.attempts = 0
        """Every attempt started (the rate budget bounds this)."""
        self.first_responses = 0
        self.start_hints: Callable[[], bool] | None = None
        """Whether container starts are coming from containerd now (set by the observer)."""
        self.start_hint_wait_s = START_HINT_WAIT_S
        self._held: set[str] = set()
        self._early: OrderedDict[str, _Early] = OrderedDict()

    @property
    def probing(self) -> int:
        return len(self._pods)

    # -- what the watch tells -----------------------------------------------------------

    def track(
        self,
        ref: events_pb2.PodRef,
        target: ProbeTarget,
        first_sight_ns: int,
        *,
        late_since_ns: int = 0,
    ) -> None:
        """Probe this pod from now on (a known pod only gets the new target).

        ``late_since_ns``: the pod was first seen in a list, created then (1: unknown)."""
        pod = self._pods.get(ref.uid)
        if pod is not None:
            # Pod IPs do not change in a pod's life; if one did, what was measured still holds.
            pod.target = target
            return
        pod = _Pod(ref, target, first_sight_ns, late_since_ns)
        early = self._early.pop(ref.uid, None)
        if early is not None:
            pod.container_created_ns = early.container_created_ns
            pod.sandbox_started_ns = early.sandbox_started_ns
        pod.interval = self._s.probe_first_interval_s
        if target.source != ADDRESS_FROM_API and not pod.container_created_ns and self._hinted():
            # The runtime's address comes as the sandbox starts; no app can listen before its
            # container exists, and containerd will say when it does (hint_created): until
            # then a sparse probe leaves the budget to pods that can answer.
            pod.interval = self._s.probe_max_interval_s
        self._pods[ref.uid] = pod
        self._schedule(pod, 0.0)

    def _hinted(self) -> bool:
        """Whether containerd's container creates and starts are coming now."""
        return self.start_hints is not None and self.start_hints()

    def _early_hints(self, uid: str) -> _Early:
        early = self._early.get(uid)
        if early is None:
            early = self._early[uid] = _Early()
            while len(self._early) > EARLY_MAX:
                self._early.popitem(last=False)
        return early

    def hint_sandbox(self, uid: str, started_ns: int) -> None:
        """The pod's sandbox started then (containerd's time): nothing of the pod answered
        before. Kept until the pod is tracked."""
        if started_ns <= 0:
            return
        pod = self._pods.get(uid)
        if pod is None:
            self._early_hints(uid).sandbox_started_ns = started_ns
        elif not pod.sandbox_started_ns:
            pod.sandbox_started_ns = started_ns

    def hint_created(self, uid: str, created_ns: int) -> None:
        """An app container's task was created then (containerd's time): the app cannot
        have answered before, so the first response is not put before it. Kept until the
        pod is tracked."""
        if created_ns <= 0:
            return
        pod = self._pods.get(uid)
        if pod is None:
            early = self._early_hints(uid)
            early.container_created_ns = min(early.container_created_ns or created_ns, created_ns)
            return
        pod.container_created_ns = min(pod.container_created_ns or created_ns, created_ns)
        self.hint_started(uid, started=False)

    def hint_started(self, uid: str, *, started: bool = True) -> None:
        """A container started (``started``; else it was created): the listen is near, so
        probe densely again."""
        pod = self._pods.get(uid)
        if pod is None:
            return  # a pod tracked later starts probing densely anyway
        pod.container_started = pod.container_started or started
        if pod.responded:
            self._report_first_response(pod)  # if it was held back for this
            return
        pod.interval = self._s.probe_first_interval_s
        if not pod.in_flight:
            self._schedule(pod, 0.0)

    def forget(self, uid: str) -> None:
        """Stop probing (deletion requested, or gone)."""
        self._early.pop(uid, None)
        pod = self._pods.pop(uid, None)
        if pod is not None:
            self._report_first_response(pod)
            pod.close()

    def _schedule(self, pod: _Pod, due: float) -> None:
        pod.seq += 1
        pod.due = due
        heapq.heappush(
            self._serving if pod.responded else self._waiting, (due, pod.seq, pod.ref.uid)
        )
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the pods until cancelled; attempts run as tasks of one TaskGroup."""
        if self._s.probe_rate == 0:
            await asyncio.Event().wait()  # probing is off: nothing is ever tracked
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                await self._serve()
            finally:
                self._group = None
                for pod in self._pods.values():
                    self._report_first_response(pod)
                    if pod.sock is not None:
                        pod.sock.close()
                        pod.sock = None

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._refilled = loop.time()
        while True:
            now = loop.time()
            self._tokens = min(
                self._capacity, self._tokens + (now - self._refilled) * self._s.probe_rate
            )
            self._refilled = now
            wake = float("inf")
            # Waiting pods first: answering pods get a token only when no waiting pod is due.
            for heap in (self._waiting, self._serving):
                due = self._serve_due(heap, now)
                if due <= now:  # out of tokens with a pod due
                    wake = now + (1.0 - self._tokens) / self._s.probe_rate
                    break
                wake = min(wake, due)
            await self._sleep(loop, max(wake, now + WAKE_QUANTUM_S))

    def _serve_due(self, heap: list[tuple[float, int, str]], now: float) -> float:
        """Start the due attempts of one heap while tokens last; the next due time."""
        while heap:
            due, seq, uid = heap[0]
            pod = self._pods.get(uid)
            if pod is None or pod.seq != seq or pod.in_flight:
                heapq.heappop(heap)
                continue
            if due > now or self._tokens < 1.0:
                return due
            heapq.heappop(heap)
            self._tokens -= 1.0
            self._attempt(pod, now)
        return float("inf")

    async def _sleep(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        self._wakeup = loop.create_future()
        handle = None if until == float("inf") else loop.call_at(until, _wake, self._wakeup)
        try:
            await self._wakeup
        finally:
            if handle is not None:
                handle.cancel()
            self._wakeup = None

    # -- one attempt ---------------------------------------------------------------------

    def _attempt(self, pod: _Pod, now: float) -> None:
        self.attempts += 1
        target = pod.target
        address = (target.ip, target.port)
        sock, pod.sock = pod.sock, None
        if sock is None:
            try:
                sock = socket.socket(
                    socket.AF_INET6 if ":" in target.ip else socket.AF_INET,
                    socket.SOCK_STREAM | socket.SOCK_NONBLOCK,
                )
            except OSError as exc:  # out of descriptors: a failure like any other
                attempt = _Attempt(wall_ns(), now, error=f"socket: {exc.strerror}")
                self._finish(pod, attempt)
                return
        start_ns = wall_ns()
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            code = sock.connect_ex(address)  # settled in the syscall on local links
        if code == errno.ECONNREFUSED and not pod.responded:
            pod.sock = sock
            self._refused(pod, start_ns, now)
            return
        attempt = _Attempt(start_ns, now)
        if code in _CONNECTED:
            attempt.connected_ns, attempt.connected_mono_ns = wall_ns(), mono_ns()
        elif code not in _IN_FLIGHT:
            sock.close()
            attempt.error = errno.errorcode.get(code, str(code)).lower()
            self._finish(pod, attempt)
            return
        pod.in_flight = True
        assert self._group is not None
        self._group.create_task(
            self._converse(pod, sock, attempt, address), name=f"probe {pod.ref.name}"
        )

    def _refused(self, pod: _Pod, start_ns: int, now: float) -> None:
        """The common case, kept cheap: a waiting pod's connect was refused."""
        pod.attempts += 1
        pod.refused += 1
        pod.failure_start_ns = start_ns
        pod.failure_connected = False
        pod.interval = min(pod.interval * self._s.probe_growth, self._s.probe_max_interval_s)
        pod.seq += 1
        # From the previous due time, not from now: the loop's wakeups are late by up to a
        # millisecond, and at 1-5 ms intervals that lateness must not add up.
        pod.due = max(pod.due, now - pod.interval) + pod.interval
        heapq.heappush(self._waiting, (pod.due, pod.seq, pod.ref.uid))

    async def _converse(
        self, pod: _Pod, sock: socket.socket, attempt: _Attempt, address: tuple[str, int]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(attempt.start + self._s.probe_timeout_s):
                if not attempt.connected_ns:
                    await loop.sock_connect(sock, address)
                    attempt.connected_ns, attempt.connected_mono_ns = wall_ns(), mono_ns()
                await loop.sock_sendall(sock, self._request(pod.target))
                attempt.status = await self._status_line(loop, sock)
                attempt.end_ns, attempt.end_mono_ns = wall_ns(), mono_ns()
                if not attempt.ok:
                    attempt.error = f"http {attempt.status}"
        except TimeoutError:
            attempt.timed_out = True
            attempt.error = "timeout"
        except (OSError, ValueError) as exc:
            attempt.error = _describe(exc)
        finally:
            sock.close()
        self._finish(pod, attempt)

    def _request(self, target: ProbeTarget) -> bytes:
        host = f"[{target.ip}]" if ":" in target.ip else target.ip
        return (
            f"GET {target.path} HTTP/1.0\r\nHost: {host}:{target.port}\r\n"
            "User-Agent: rtbench-agent\r\nConnection: close\r\n\r\n"
        ).encode()

    async def _status_line(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> int:
        data = b""
        while b"\n" not in data:
            chunk = await loop.sock_recv(sock, 1024)
            if not chunk:
                raise ValueError("connection closed before the status line")
            data += chunk
            if len(data) > MAX_STATUS_LINE:
                raise ValueError("status line too long")
        parts = data.split(b"\n", 1)[0].split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError("malformed status line")
        return int(parts[1])

    # -- what an attempt means -----------------------------------------------------------

    def _finish(self, pod: _Pod, attempt: _Attempt) -> None:
        pod.in_flight = False
        if pod.forgotten:
            return
        if not attempt.end_ns:
            attempt.end_ns, attempt.end_mono_ns = wall_ns(), mono_ns()
        if not pod.responded:
            if attempt.ok:
                self._first_response(pod, attempt)
            else:
                self._failed_before(pod, attempt)
        else:
            self._after_success(pod, attempt)
        loop = asyncio.get_running_loop()
        self._schedule(pod, max(loop.time(), attempt.start + pod.interval))

    def _failed_before(self, pod: _Pod, attempt: _Attempt) -> None:
        pod.attempts += 1
        pod.failure_start_ns = attempt.start_ns
        pod.failure_connected = bool(attempt.connected_ns)
        if attempt.timed_out:
            pod.timeouts += 1
        elif attempt.connected_ns:
            pod.http_failures += 1
        else:
            pod.refused += 1
        pod.interval = min(pod.interval * self._s.probe_growth, self._s.probe_max_interval_s)

    def _first_response(self, pod: _Pod, attempt: _Attempt) -> None:
        pod.attempts += 1
        pod.responded = True
        pod.interval = self._s.probe_after_success_interval_s
        pod.last_ok_start_ns = attempt.start_ns
        self.first_responses += 1
        if pod.failure_start_ns and pod.failure_connected:
            end, end_mono, source = attempt.end_ns, attempt.end_mono_ns, "http_failure"
        else:
            end, end_mono = attempt.connected_ns, attempt.connected_mono_ns
            source = "connect_failure" if pod.failure_start_ns else "first_sight"
        start = pod.failure_start_ns or min(pod.first_sight_ns, end)
        late: dict[str, str] = {}
        if not pod.failure_start_ns and pod.late_since_ns:
            # Answering at once after a first sight in a list says nothing about when it
            # began to: anywhere since the pod was created.
            if pod.late_since_ns > 1:
                start = min(pod.late_since_ns, end)
            source = "before_first_sight"
            late = {SEEN_LATE: "answered at the first probe of a pod first seen in a list"}
        pod.held = _Bracket(
            start,
            end,
            end_mono,
            source,
            {
                **late,
                "attempts": str(pod.attempts),
                "probe_started_ns": str(pod.tracked_ns),
                "refused": str(pod.refused),
                "timeouts": str(pod.timeouts),
                "http_failures": str(pod.http_failures),
                "status_code": str(attempt.status),
                "response_ns": str(attempt.end_ns),
                "pod_ip": pod.target.ip,
                "port": str(pod.target.port),
                "address_source": pod.target.source,
            },
        )
        heard = pod.container_created_ns or pod.container_started
        if heard or not self._hinted():
            self._report_first_response(pod)
        else:
            self._held.add(pod.ref.uid)
            asyncio.get_running_loop().call_later(
                self.start_hint_wait_s, self._report_first_response, pod
            )
        self._result(pod, attempt)

    def _report_first_response(self, pod: _Pod) -> None:
        """The first_response event of a held bracket (once; later calls do nothing)."""
        bracket, pod.held = pod.held, None
        self._held.discard(pod.ref.uid)
        if bracket is None:
            return
        start, end, source = bracket.start, bracket.end, bracket.source
        # The tightest lower bound the runtime gave: nothing answers before its sandbox
        # started, and the app not before its container's task was created (the later).
        for bound, name in (
            (pod.sandbox_started_ns, "sandbox_started"),
            (pod.container_created_ns, "container_created"),
        ):
            if start < bound <= end:
                start, source = bound, name
        # The midpoint, ± half the width: the estimate that is never further than
        # that from the moment the app became reachable, wherever in the bracket it was.
        half = (end - start + 1) // 2
        event = events_pb2.Event(
            phase=events_pb2.PHASE_FIRST_RESPONSE,
            source=events_pb2.SOURCE_PROBE,
            time_ns=end - half,
            monotonic_ns=bracket.end_mono - half,
            uncertainty_ns=half,
        )
        event.pod.CopyFrom(pod.ref)
        event.attributes.update(
            {
                "bracket_start_ns": str(start),
                "bracket_end_ns": str(end),
                "bracket_start_source": source,
                **bracket.attributes,
            }
        )
        self._outbox.put_event(event)

    def _after_success(self, pod: _Pod, attempt: _Attempt) -> None:
        self._result(pod, attempt)
        if attempt.ok:
            pod.outage = False
            pod.last_ok_start_ns = attempt.start_ns
            return
        if pod.outage:
            return
        pod.outage = True
        event = events_pb2.Event(
            phase=events_pb2.PHASE_UNAVAILABLE,
            source=events_pb2.SOURCE_PROBE,
            time_ns=attempt.end_ns,
            monotonic_ns=attempt.end_mono_ns,
            uncertainty_ns=attempt.end_ns - pod.last_ok_start_ns,
            reason=attempt.error,
        )
        event.pod.CopyFrom(pod.ref)
        event.attributes.update(
            {"last_ok_start_ns": str(pod.last_ok_start_ns), "pod_ip": pod.target.ip}
        )
        self._outbox.put_event(event)

    def _result(self, pod: _Pod, attempt: _Attempt) -> None:
        result = events_pb2.ProbeResult(
            time_ns=attempt.start_ns,
            ok=attempt.ok,
            latency_ns=attempt.end_ns - attempt.start_ns,
            status_code=attempt.status,
            error=attempt.error,
        )
        result.pod.CopyFrom(pod.ref)
        self._outbox.put_probe(result)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return str(exc) or type(exc).__name__

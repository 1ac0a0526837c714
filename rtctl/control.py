"""rtctl's client of the collector's control API: runs, clock sync, progress, summaries.

Every rtctl command goes through ``Collector`` so that the connection rules
(token, TLS, deadlines, message size) and the translation of gRPC failures into
one clear line live in one place::

    async with Collector.connect(settings) as collector:
        clock = await collector.sync_clock()
        run_id = await collector.register_run(spec)

A failed call raises a ``CollectorError`` subclass (rtctl/errors.py) whose
message names the collector and the call: unreachable, refused token, unknown
run, or the status the collector answered. Unary calls have a deadline
(``ConnectionSettings.rpc_timeout_s``); the progress stream has none, it lasts
as long as the run.

The clock sync is a burst of unary ``SyncClock`` exchanges, each stamped just
around the call, estimated by ``rtbench.clock.OffsetEstimator`` from the
lowest-delay exchange, the same estimate the agents use.

Riding out a collector outage (``Collector.connect(settings, ride_out=True)``,
what start-run and run-plan use): a restarted collector keeps its journal, so
a run need not die with it. A call that finds the collector unreachable
(UNAVAILABLE or a passed deadline) is retried with pauses from 0.2 s doubling
to 2 s until it answers or the outage has lasted ``collector_outage_s``
(``--collector-outage``, 60 s by default); one outage is one budget, shared by
every call that meets it, so past the limit each further call fails at once
(the cleanup after the failure is not held up again). ``on_outage`` is told
once when an outage starts and once when the collector answers again. Retried
calls are safe to repeat: RecordCreate and FinishRun store the same values
again, a RegisterRun whose answer was lost is found registered (ALREADY_EXISTS
on a retry counts as done), and the progress stream is opened again (it starts
with the collector's counts from its journal). The gRPC channel reconnects
within 2 s of the collector's return (its own backoff would grow to minutes).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from rtbench.clock import OffsetEstimator, SyncSample, offset_message, wall_ns
from rtbench.grpcsecurity import ChannelSecurity, CredentialsError
from rtbench.v1 import control_pb2, control_pb2_grpc, events_pb2

from .bounds import NO_CHANGES, UncertaintyBounds
from .errors import (
    CollectorAuthError,
    CollectorError,
    CollectorUnreachable,
    RunExists,
    UnknownRun,
)
from .settings import ConnectionSettings

__all__ = ["Collector", "describe_silence", "error_for", "silent_nodes"]

T = TypeVar("T")

_OPTIONS: tuple[tuple[str, Any], ...] = (
    # A summary with per-pod timelines of a 10,000-pod run is several MB: far
    # above grpc's 4 MiB default for what a client may receive.
    ("grpc.max_receive_message_length", 256 * 2**20),
    # A collector back from an outage is found within 2 s, not after grpc's backoff
    # (which grows to 120 s) has run out.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
RETRY_PAUSE_S = 0.2
"""First pause before a call is retried in an outage; doubled up to RETRY_PAUSE_MAX_S."""
RETRY_PAUSE_MAX_S = 2.0
_TLS_WORDS = ("ssl", "tls", "handshake", "certificate")


def error_for(exc: grpc.aio.AioRpcError, target: str, call: str) -> CollectorError:
    """The rtctl error for a failed control call, with one line saying what happened."""
    code, details = exc.code(), exc.details() or ""
    text = f"{code.name}: {details}" if details else code.name
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return CollectorAuthError(f"collector {target} refused our token ({text})")
    if code == grpc.StatusCode.NOT_FOUND:
        return UnknownRun(f"collector {target}: {details or 'unknown run'}")
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return RunExists(f"collector {target}: {details or 'run already registered'}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CollectorUnreachable(f"collector {target} did not answer {call} in time")
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(word in details.lower() for word in _TLS_WORDS):
            return CollectorUnreachable(f"TLS handshake with collector {target} failed ({text})")
        return CollectorUnreachable(f"collector {target} is unreachable ({text})")
    return CollectorError(f"collector {target}: {call} failed ({text})")


def silent_nodes(agents: Sequence[control_pb2.AgentInfo], nodes: Iterable[str]) -> list[str]:
    """Of ``nodes``, those whose connected agents are all stale (none speaks any more)."""
    live = {a.node for a in agents if a.connected and not a.stale}
    stale = {a.node for a in agents if a.connected and a.stale}
    return [n for n in nodes if n in stale and n not in live]


def describe_silence(node: str, agents: Sequence[control_pb2.AgentInfo]) -> str:
    """``sim-node-2 (silent for 12.3 s)``, from the collector's own clock."""
    stale = [a for a in agents if a.node == node and a.connected and a.stale]
    if not stale or not stale[0].last_heard_ns:
        return node
    silent_s = max(wall_ns() - max(a.last_heard_ns for a in stale), 0) / 1e9
    return f"{node} (silent for {silent_s:.1f} s)"


class Collector:
    """A connection to the collector's ControlService (an async context manager)."""

    def __init__(self, settings: ConnectionSettings, *, ride_out: bool = False) -> None:
        self.settings = settings
        self.target = settings.collector
        self.outage_s = settings.collector_outage_s if ride_out else 0.0
        """How long an outage is ridden out (0: a call fails at its first UNAVAILABLE)."""
        self.on_outage: Callable[[str], None] = lambda text: None
        """Told when an outage starts and when the collector answers again."""
        self._down_since: float | None = None
        self._back_at: float | None = None
        self.clock: events_pb2.ClockOffset | None = None
        """The last clock estimate ``sync_clock`` measured (None before)."""
        self._security: ChannelSecurity | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: control_pb2_grpc.ControlServiceStub | None = None
        self._ids = itertools.count(1)

    @classmethod
    def connect(cls, settings: ConnectionSettings, *, ride_out: bool = False) -> Collector:
        """``async with Collector.connect(settings) as collector``: opens on enter;
        ``ride_out``: retry through outages up to ``settings.collector_outage_s``."""
        return cls(settings, ride_out=ride_out)

    async def __aenter__(self) -> Collector:
        try:
            self._security = await asyncio.to_thread(
                ChannelSecurity.from_settings, self.settings, options=_OPTIONS
            )
        except CredentialsError as exc:
            raise CollectorError(str(exc)) from exc
        self._channel = self._security.open_channel()
        self._stub = control_pb2_grpc.ControlServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; streams still open are cancelled."""
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    # -- plumbing -------------------------------------------------------------------------

    @property
    def stub(self) -> control_pb2_grpc.ControlServiceStub:
        if self._stub is None:
            raise CollectorError("the collector connection is not open (use `async with`)")
        return self._stub

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        assert self._security is not None
        try:
            return await self._security.metadata()
        except CredentialsError as exc:
            raise CollectorError(str(exc)) from exc

    async def _unary(self, name: str, method: Callable[..., Awaitable[T]], request: Any) -> T:
        async def once() -> T:
            metadata = await self._metadata()
            try:
                return await method(request, metadata=metadata, timeout=self.settings.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                raise error_for(exc, self.target, name) from None

        return await self.ride(name, once)

    # -- outages --------------------------------------------------------------------------

    @property
    def down_for(self) -> float | None:
        """Seconds since the current outage began; None while the collector answers."""
        return None if self._down_since is None else time.monotonic() - self._down_since

    @property
    def back_for(self) -> float | None:
        """Seconds since the collector answered again after the last outage; None when
        there was none (agents need a few seconds to reconnect to a restarted collector)."""
        return None if self._back_at is None else time.monotonic() - self._back_at

    async def ride(self, call: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it does not raise CollectorUnreachable or the outage is
        longer than ``outage_s`` (then one CollectorUnreachable saying so)."""
        pause = RETRY_PAUSE_S
        while True:
            try:
                result = await attempt()
            except CollectorUnreachable as exc:
                self.unreachable(call, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_PAUSE_MAX_S)
                continue
            self.reachable()
            return result

    def unreachable(self, call: str, exc: CollectorUnreachable) -> None:
        """Count ``exc`` against the outage: returns while it may be retried, else raises."""
        if self.outage_s <= 0:
            raise exc
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.on_outage(
                f"collector outage: {exc} during {call}; retrying for up to "
                f"{self.outage_s:g} s (--collector-outage)"
            )
        down = time.monotonic() - self._down_since
        if down > self.outage_s:
            raise CollectorUnreachable(
                f"collector {self.target} unreachable for {down:.0f} s, longer than "
                f"--collector-outage {self.outage_s:g} s ({call}: {exc})"
            ) from None

    def reachable(self) -> None:
        """The collector answered: an outage under way is over."""
        if self._down_since is not None:
            self._back_at = time.monotonic()
            down = self._back_at - self._down_since
            self._down_since = None
            self.on_outage(f"collector {self.target} answers again after a {down:.1f} s outage")

    # -- the control API ------------------------------------------------------------------

    async def sync_clock(self, exchanges: int = 8) -> events_pb2.ClockOffset:
        """rtctl's offset to the collector from ``exchanges`` NTP-style exchanges (a burst
        cut by an outage is taken again once the collector is back)."""
        if exchanges < 1:
            raise ValueError("exchanges must be at least 1")
        return await self.ride("SyncClock", lambda: self._sync_burst(exchanges))

    async def _sync_burst(self, exchanges: int) -> events_pb2.ClockOffset:
        estimator = OffsetEstimator(exchanges)
        metadata = await self._metadata()
        for _ in range(exchanges):
            request_id = next(self._ids)
            t1 = wall_ns()
            try:
                reply = await self.stub.SyncClock(
                    events_pb2.ClockSyncRequest(id=request_id, t1_ns=t1),
                    metadata=metadata,
                    timeout=self.settings.rpc_timeout_s,
                )
            except grpc.aio.AioRpcError as exc:
                raise error_for(exc, self.target, "SyncClock") from None
            t4 = wall_ns()
            if reply.id != request_id or reply.t1_ns != t1:
                raise CollectorError(f"collector {self.target} answered SyncClock out of turn")
            try:
                estimator.add(SyncSample(t1=t1, t2=reply.t2_ns, t3=reply.t3_ns, t4=t4))
            except ValueError:
                continue  # the local clock stepped mid-exchange: that sample says nothing
        estimate = estimator.estimate()
        if estimate is None:
            raise CollectorError(
                f"clock sync with collector {self.target} failed: every exchange was impossible "
                "(is the local clock being stepped?)"
            )
        self.clock = offset_message(estimate)
        return self.clock

    async def register_run(self, spec: control_pb2.RunSpec) -> str:
        """Register the run described by ``spec`` (its run_id must be set); the run id.

        ALREADY_EXISTS after an attempt that met an outage is that attempt's success
        (its answer was lost); on the first attempt it is RunExists."""
        request = control_pb2.RegisterRunRequest(spec=spec)
        outages = 0

        async def once() -> str:
            nonlocal outages
            metadata = await self._metadata()
            try:
                reply = await self.stub.RegisterRun(
                    request, metadata=metadata, timeout=self.settings.rpc_timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                error = error_for(exc, self.target, "RegisterRun")
                if isinstance(error, RunExists) and outages:
                    return spec.run_id
                if isinstance(error, CollectorUnreachable):
                    outages += 1
                raise error from None
            return str(reply.run_id)

        return await self.ride("RegisterRun", once)

    async def record_create(
        self, run_id: str, sent_ns: int, received_ns: int, clock: events_pb2.ClockOffset
    ) -> int:
        """Record when the Deployment create was sent/answered (rtctl clock); created_ns
        in the collector timebase."""
        request = control_pb2.RecordCreateRequest(
            run_id=run_id,
            request_sent_ns=sent_ns,
            response_received_ns=received_ns,
            rtctl_clock=clock,
        )
        reply = await self._unary("RecordCreate", self.stub.RecordCreate, request)
        return int(reply.created_ns)

    async def finish_run(self, run_id: str, state: control_pb2.RunState, message: str = "") -> None:
        """Mark the run finished in ``state`` (a terminal state); the collector stores its
        summary."""
        request = control_pb2.FinishRunRequest(run_id=run_id, state=state, message=message)
        await self._unary("FinishRun", self.stub.FinishRun, request)

    async def watch_progress(self, run_id: str) -> AsyncGenerator[control_pb2.Progress, None]:
        """Progress messages (counts per phase) on every change, until the run is finished.

        Use it as ``async for``; break out early with ``contextlib.aclosing`` around it
        so the stream is cancelled at once.
        """
        metadata = await self._metadata()
        call = self.stub.WatchProgress(
            control_pb2.WatchProgressRequest(run_id=run_id), metadata=metadata
        )
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise error_for(exc, self.target, "WatchProgress") from None
        finally:
            call.cancel()

    async def summary(
        self,
        run_id: str,
        include_pods: bool = False,
        bounds: UncertaintyBounds = NO_CHANGES,
    ) -> control_pb2.RunSummary:
        """The run's summary, computed now from the journal (with per-pod times if asked),
        its statistics under the collector's default uncertainty bounds with ``bounds``'
        changes (rtctl/bounds.py; ``bounds_applied`` is False from an older collector)."""
        request = control_pb2.GetRunSummaryRequest(
            run_id=run_id, include_pods=include_pods, max_uncertainty=bounds.request()
        )
        return await self._unary("GetRunSummary", self.stub.GetRunSummary, request)

    async def runs(self, test_id: str = "", plan_id: str = "") -> list[control_pb2.RunInfo]:
        """Registered runs, oldest first, optionally of one test id and/or plan id."""
        request = control_pb2.ListRunsRequest(test_id=test_id, plan_id=plan_id)
        reply = await self._unary("ListRuns", self.stub.ListRuns, request)
        return list(reply.runs)

    async def agents(self) -> list[control_pb2.AgentInfo]:
        """Every agent the collector has heard of, connected or not, with its clock offset."""
        request = control_pb2.ListAgentsRequest()
        reply = await self._unary("ListAgents", self.stub.ListAgents, request)
        return list(reply.agents)

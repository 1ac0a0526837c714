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
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Awaitable, Callable
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

__all__ = ["Collector", "error_for"]

T = TypeVar("T")

_OPTIONS: tuple[tuple[str, Any], ...] = (
    # A summary with per-pod timelines of a 10,000-pod run is several MB: far
    # above grpc's 4 MiB default for what a client may receive.
    ("grpc.max_receive_message_length", 256 * 2**20),
)
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


class Collector:
    """A connection to the collector's ControlService (an async context manager)."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.target = settings.collector
        self.clock: events_pb2.ClockOffset | None = None
        """The last clock estimate ``sync_clock`` measured (None before)."""
        self._security: ChannelSecurity | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: control_pb2_grpc.ControlServiceStub | None = None
        self._ids = itertools.count(1)

    @classmethod
    def connect(cls, settings: ConnectionSettings) -> Collector:
        """``async with Collector.connect(settings) as collector``: opens on enter."""
        return cls(settings)

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
        metadata = await self._metadata()
        try:
            return await method(request, metadata=metadata, timeout=self.settings.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise error_for(exc, self.target, name) from None

    # -- the control API ------------------------------------------------------------------

    async def sync_clock(self, exchanges: int = 8) -> events_pb2.ClockOffset:
        """rtctl's offset to the collector from ``exchanges`` NTP-style exchanges."""
        if exchanges < 1:
            raise ValueError("exchanges must be at least 1")
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
        """Register the run described by ``spec`` (its run_id must be set); the run id."""
        reply = await self._unary(
            "RegisterRun", self.stub.RegisterRun, control_pb2.RegisterRunRequest(spec=spec)
        )
        return str(reply.run_id)

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

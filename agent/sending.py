"""The uplink: one bidirectional gRPC stream to the collector, kept up forever.

A session opens ``AgentService.Connect``, sends ``Hello`` and waits for
``Welcome``; the batches the collector already holds (``committed_sequence``)
are forgotten, then every unacknowledged batch in the spool is sent in sequence
order (the resend), followed by new ones as the batcher seals them. At most
``window`` batches are in flight. An ``Ack`` (also ``duplicate=true``) deletes
its batch from memory and spool; acks may come in any order. Clock-sync
requests share the stream (agent/clocksync.py).

When the stream breaks the uplink reconnects, forever, and resends whatever is
unacknowledged. The wait depends on the error type (agent/errors.py):

- ``TransientError`` (refused, reset, restarted, silent for ``response_timeout_s``)
  and ``PushBack`` (RESOURCE_EXHAUSTED): exponential backoff with full jitter,
  uniform in [0, min(reconnect_max_s, reconnect_min_s · 2^attempt)]
  (rtbench/backoff.py). The attempt count restarts only once a session got an
  answer after its Welcome (and did not end in push back), so a collector that
  accepts and immediately drops us, or keeps saying it is overloaded, is not
  hammered.
- ``OperatorError`` (wrong token, TLS handshake, protocol): logged as ERROR, and
  retried every ``operator_retry_s`` (jittered), because the fix (a new token
  file, a certificate, an upgraded collector) can arrive while the agent runs
  and keeps spooling. ``last_error`` and the counters say what is going on.

An INVALID_ARGUMENT that names a batch in its trailing metadata
(``rtbench.protocol.REJECTED_SEQUENCE_KEY``) refused that batch alone: it is set
aside in the spool as a ``.rejected`` file (counted, logged as ERROR) and the
uplink reconnects after the usual jittered backoff (a ``TransientError``), so one
bad batch cannot block everything after it.

A batch sealed before the first clock exchange carries no offset. Each session
waits up to ``CLOCK_WAIT_S`` for the first reply of its clock-sync burst before
sending batches, and a batch without an offset gets the current one at send
time (the spooled copy stays as sealed): the offset is a property of the two
clocks, not of the moment of sealing.

Each kind of failure is logged once per outage (WARNING, or ERROR for an
``OperatorError``), not once per retry; the reconnect is logged at INFO with how
long the outage lasted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc

from rtbench import __version__
from rtbench.backoff import full_jitter, hold_group_open, raise_if_cancelled
from rtbench.clock import wall_ns
from rtbench.protocol import PROTOCOL, REJECTED_SEQUENCE_KEY
from rtbench.v1 import agent_pb2, agent_pb2_grpc

from .clocksync import ClockSync, sync_periodically
from .errors import (
    AuthError,
    OperatorError,
    ProtocolError,
    PushBack,
    TlsError,
    TransientError,
    UplinkError,
)
from .security import ChannelSecurity
from .settings import UplinkSettings
from .spool import Spool

__all__ = ["Uplink", "UplinkCounters"]

log = logging.getLogger(__name__)


CLOCK_WAIT_S = 1.0
"""How long a new session waits for its first clock reply before sending batches."""

_AUTH = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_CONTRACT = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
)
# grpc reports a failed TLS handshake only as UNAVAILABLE with text from the TLS
# library; these words are the only way to tell it from a collector that is down.
_TLS_WORDS = ("ssl", "tls", "handshake", "certificate", "verification", "tsi_")


@dataclass(frozen=True)
class UplinkCounters:
    """A snapshot for tests, logs and the progress line."""

    sent: int
    """Batch messages written to a stream (resends included)."""
    acked: int
    """Batches the collector acknowledged (or reported committed at Welcome)."""
    resent: int
    """Sends of a batch that an earlier session or agent run may have sent already."""
    duplicates: int
    """Acks flagged duplicate: the collector had committed the batch before."""
    spooled: int
    unacked: int
    dropped_overflow: int
    dropped_records: int
    rejected: int
    """Batches the collector refused as invalid, set aside in the spool as ``.rejected``."""
    reconnects: int
    """Sessions started after a failed or ended one."""
    auth_failures: int
    clock_exchanges: int
    connected: bool


def classify(code: grpc.StatusCode, details: str, target: str) -> UplinkError:
    """The error type for a failed stream, from its status."""
    text = f"{code.name}: {details}" if details else code.name
    if code in _AUTH:
        return AuthError(f"collector {target} refused our token ({text})")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return PushBack(f"collector {target} pushes back ({text}); keeping the data")
    if code in _CONTRACT:
        return ProtocolError(f"collector {target} refused the stream ({text})")
    if code == grpc.StatusCode.UNAVAILABLE and any(w in details.lower() for w in _TLS_WORDS):
        return TlsError(f"TLS handshake with collector {target} failed ({text})")
    return TransientError(f"collector {target} unavailable ({text})")


def _rejected_sequence(code: grpc.StatusCode, trailer: Any) -> int | None:
    """The batch an INVALID_ARGUMENT refused, when the collector named one."""
    if code != grpc.StatusCode.INVALID_ARGUMENT or not trailer:
        return None
    for key, value in trailer:
        if key == REJECTED_SEQUENCE_KEY and str(value).isdigit():
            return int(value)
    return None


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a failed session reports: anything not an UplinkError wins (it is fatal)."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(reversed(exc.exceptions))
        else:
            leaves.append(exc)
    fatal = [e for e in leaves if not isinstance(e, UplinkError | asyncio.CancelledError)]
    return (fatal or leaves)[0]


class Uplink:
    """Keeps the stream to the collector up and the spool drained into it."""

    def __init__(
        self,
        settings: UplinkSettings,
        *,
        agent_id: str,
        node: str,
        spool: Spool,
        clock: ClockSync,
        security: ChannelSecurity,
        node_facts: Callable[[], agent_pb2.NodeFacts] = agent_pb2.NodeFacts,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._agent_id = agent_id
        self._node = node
        self._spool = spool
        self._clock = clock
        self._security = security
        self._node_facts = node_facts
        self._rng = rng or random.Random()
        self._write_lock = asyncio.Lock()
        self._cursor = 0
        # Everything already spooled at start may have been sent by an earlier run.
        self._ever_sent = spool.last_sequence
        self._last_heard = time.monotonic()
        self._heard_since_welcome = False
        self._down_since: float | None = None
        self._reported: set[type[UplinkError]] = set()
        self.connected = False
        self.collector_id: str | None = None
        self.last_error: UplinkError | None = None
        self.sent = self.acked = self.resent = self.duplicates = 0
        self.reconnects = self.auth_failures = 0

    @property
    def counters(self) -> UplinkCounters:
        spool = self._spool.counters
        return UplinkCounters(
            sent=self.sent,
            acked=self.acked,
            resent=self.resent,
            duplicates=self.duplicates,
            spooled=spool.spooled,
            unacked=self._spool.unacked,
            dropped_overflow=spool.dropped_overflow,
            dropped_records=spool.dropped_records,
            rejected=spool.rejected,
            reconnects=self.reconnects,
            auth_failures=self.auth_failures,
            clock_exchanges=self._clock.exchanges,
            connected=self.connected,
        )

    # -- the reconnect loop ------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stream, reconnect; until cancelled. Only a SpoolError escapes."""
        attempt = 0
        first = True
        while True:
            if not first:
                self.reconnects += 1
            first = False
            try:
                await self._session()
            except UplinkError as exc:
                raise_if_cancelled()
                error = exc
            else:  # pragma: no cover - _session only ends by raising
                error = TransientError("stream ended")
            if self._heard_since_welcome and not isinstance(error, PushBack):
                attempt = 0
            if type(error) not in self._reported:
                self._reported.add(type(error))
                self._report(error)
            if self._down_since is None:
                self._down_since = time.monotonic()
            self.last_error = error
            if isinstance(error, AuthError):
                self.auth_failures += 1
            if isinstance(error, OperatorError):
                delay = self._settings.operator_retry_s * self._rng.uniform(0.5, 1.0)
            else:
                delay = full_jitter(
                    attempt,
                    self._settings.reconnect_min_s,
                    self._settings.reconnect_max_s,
                    self._rng,
                )
                attempt += 1
            await asyncio.sleep(delay)

    def _report(self, error: UplinkError) -> None:
        if isinstance(error, OperatorError):
            log.error("%s; retrying every ~%.0f s", error, self._settings.operator_retry_s)
        else:
            log.warning("%s; reconnecting with backoff, batches stay in the spool", error)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every spooled batch is acknowledged; False if time ran out."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    changed = self._spool.change()
                    if not self._spool.unacked:
                        return True
                    await changed.wait()
        except TimeoutError:
            return False

    # -- one session ----------------------------------------------------------------------

    async def _session(self) -> None:
        target = self._security.target
        metadata = await self._security.metadata()
        channel = self._security.open_channel()
        call: Any = agent_pb2_grpc.AgentServiceStub(channel).Connect(metadata=metadata)
        self._heard_since_welcome = False
        try:
            await self._guard(call, self._handshake(call))
            async with asyncio.TaskGroup() as group:
                for name, coro in (
                    ("uplink-send", self._send_batches(call)),
                    ("uplink-receive", self._receive(call)),
                    ("uplink-watchdog", self._watchdog()),
                    (
                        "uplink-clock-sync",
                        sync_periodically(
                            lambda: self._send_clock_request(call),
                            interval_s=self._settings.clock_sync_interval_s,
                            burst=self._settings.clock_sync_burst,
                        ),
                    ),
                ):
                    group.create_task(self._guard(call, coro), name=name)
                await hold_group_open()
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        finally:
            self.connected = False
            self._clock.session_ended()
            call.cancel()
            await channel.close()
        raise TransientError(f"stream to {target} ended")  # pragma: no cover

    async def _guard(self, call: Any, coro: Coroutine[Any, Any, None]) -> None:
        """Run one part of the session, turning grpc failures into UplinkErrors."""
        try:
            await coro
        except grpc.aio.AioRpcError as exc:
            code, details, trailer = exc.code(), exc.details(), exc.trailing_metadata()
        except asyncio.InvalidStateError:
            # Writing to a call that already ended: its status says why.
            code, details = await call.code(), await call.details()
            trailer = await call.trailing_metadata()
        else:
            return
        rejected = _rejected_sequence(code, trailer)
        if rejected is not None:
            await self._set_aside(rejected, details or "")
            raise TransientError(f"collector refused batch {rejected}") from None
        raise classify(code, details or "", self._security.target) from None

    async def _set_aside(self, seq: int, details: str) -> None:
        """One invalid batch must not block the stream: keep it on disk, move on."""
        if await self._spool.reject(seq):
            log.error(
                "collector %s refused batch %d as invalid (%s); set aside in %s as .rejected",
                self._security.target,
                seq,
                details,
                self._spool.directory,
            )

    async def _handshake(self, call: Any) -> None:
        hello = agent_pb2.Hello(
            agent_id=self._agent_id,
            node=self._node,
            agent_version=__version__,
            protocol=PROTOCOL,
            node_facts=self._node_facts(),
            clock_sync_interval_ms=round(self._settings.clock_sync_interval_s * 1000),
        )
        await call.write(agent_pb2.AgentMessage(hello=hello))
        try:
            async with asyncio.timeout(self._settings.response_timeout_s):
                message = await call.read()
        except TimeoutError:
            raise TransientError(
                f"no Welcome from {self._security.target} "
                f"within {self._settings.response_timeout_s} s"
            ) from None
        if message is grpc.aio.EOF:
            raise TransientError(f"collector {self._security.target} closed before Welcome")
        if message.WhichOneof("body") != "welcome":
            raise ProtocolError(
                f"collector {self._security.target} answered Hello with "
                f"{message.WhichOneof('body')!r}, not Welcome"
            )
        await self._welcomed(message.welcome)

    async def _welcomed(self, welcome: agent_pb2.Welcome) -> None:
        self._clock.collector_is(welcome.collector_id)
        committed = welcome.committed_sequence
        if committed > self._spool.last_sequence:
            # The collector knows this id further than our state dir does (a wiped state
            # dir with an explicit --agent-id): new batches must not look like resends.
            log.warning(
                "collector holds sequence %d of agent %s, the spool only %d: skipping ahead",
                committed,
                self._agent_id,
                self._spool.last_sequence,
            )
            await self._spool.advance_sequence(committed)
        self.acked += await self._spool.ack_through(committed)
        self.collector_id = welcome.collector_id
        self.connected = True
        self._cursor = 0
        self._last_heard = time.monotonic()
        if self._down_since is None:
            verb, outage = "connected to", ""
        else:
            verb, outage = "reconnected to", f" after {time.monotonic() - self._down_since:.1f} s"
        log.info(
            "%s collector %s (%s, id %s)%s; %d batches to send",
            verb,
            self._security.target,
            self._security.scheme,
            welcome.collector_id or "?",
            outage,
            self._spool.unacked,
        )
        self._down_since = None
        self._reported.clear()
        self.last_error = None

    def _outstanding(self) -> bool:
        return self._spool.count_upto(self._cursor) > 0 or self._clock.outstanding > 0

    def _mark_sending(self) -> None:
        # The silence timer runs from the moment something is awaited, not from
        # the last answer before a quiet period.
        if not self._outstanding():
            self._last_heard = time.monotonic()

    async def _send_batches(self, call: Any) -> None:
        await self._clock.wait_estimate(CLOCK_WAIT_S)
        while True:
            changed = self._spool.change()
            seq = self._spool.next_after(self._cursor)
            if seq is None or self._spool.count_upto(self._cursor) >= self._settings.window:
                await changed.wait()
                continue
            batch = await self._spool.load(seq)
            if batch is None:  # acked, dropped or damaged meanwhile
                continue
            if not batch.HasField("clock"):
                clock = self._clock.current()
                if clock is not None:
                    stamped = agent_pb2.Batch()
                    stamped.CopyFrom(batch)
                    stamped.clock.CopyFrom(clock)
                    batch = stamped
            async with self._write_lock:
                self._mark_sending()
                self._cursor = seq
                await call.write(agent_pb2.AgentMessage(batch=batch))
            self.sent += 1
            if seq <= self._ever_sent:
                self.resent += 1
            else:
                self._ever_sent = seq

    async def _send_clock_request(self, call: Any) -> None:
        async with self._write_lock:
            self._mark_sending()
            request = self._clock.request()  # t1 stamped once the stream is ours
            await call.write(agent_pb2.AgentMessage(clock_sync=request))

    async def _receive(self, call: Any) -> None:
        while True:
            message = await call.read()
            t4 = wall_ns()
            if message is grpc.aio.EOF:
                raise TransientError(f"collector {self._security.target} ended the stream")
            self._last_heard = time.monotonic()
            self._heard_since_welcome = True
            kind = message.WhichOneof("body")
            if kind == "ack":
                if await self._spool.ack(message.ack.sequence):
                    self.acked += 1
                    self.duplicates += message.ack.duplicate
            elif kind == "clock_sync":
                self._clock.on_reply(message.clock_sync, t4)
            else:
                log.debug("ignoring %r from the collector mid-stream", kind)

    async def _watchdog(self) -> None:
        timeout = self._settings.response_timeout_s
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            silent = time.monotonic() - self._last_heard
            if self._outstanding() and silent > timeout:
                raise TransientError(
                    f"collector {self._security.target} silent for {silent:.0f} s "
                    f"with {self._spool.count_upto(self._cursor)} batches in flight"
                )

"""Clock sync with the collector, NTP-style, over the uplink stream itself.

Every event carries the agent's wall clock; the collector can only compare
agents (and rtctl) once each batch says how far the agent's clock is from the
collector's. The exchanges ride the same gRPC stream as the batches rather than
a separate call, so they measure the path the batches take and need no second
connection, token or TLS setup.

Each session starts with a burst of requests (20 ms apart, ``burst_gap_s``, so
they do not queue behind each other) to get a good estimate quickly, then sends
one every ``interval_s``; ``rtbench.clock.OffsetEstimator`` keeps a window of
samples and estimates from the lowest-delay one (offset = collector - agent,
uncertainty = half that sample's round trip). ``ClockSync.current()`` is the
``ClockOffset`` every sealed batch carries. When the agent connects to a
different collector (another ``collector_id``) the old samples are discarded:
they describe another machine's clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from rtbench.clock import OffsetEstimate, OffsetEstimator, SyncSample, offset_message, wall_ns
from rtbench.v1 import events_pb2

__all__ = ["ClockSync", "sync_periodically"]

MAX_OUTSTANDING = 64
"""Requests whose reply is still awaited; older ones are forgotten (bounded memory)."""


class ClockSync:
    """Pairs requests with replies and keeps the offset estimate."""

    def __init__(self, window: int = 16) -> None:
        self._window = window
        self._estimator = OffsetEstimator(window)
        self._ids = itertools.count(1)
        self._pending: OrderedDict[int, int] = OrderedDict()
        self._collector_id: str | None = None
        self._estimated = asyncio.Event()
        self.exchanges = 0
        """Replies matched to a request since start."""
        self.rejected = 0
        """Replies that matched no request or were impossible (clock stepped mid-exchange)."""

    def request(self) -> events_pb2.ClockSyncRequest:
        """A new request, t1 stamped now: call it just before writing."""
        request_id = next(self._ids)
        t1 = wall_ns()
        self._pending[request_id] = t1
        while len(self._pending) > MAX_OUTSTANDING:
            self._pending.popitem(last=False)
        return events_pb2.ClockSyncRequest(id=request_id, t1_ns=t1)

    def on_reply(self, reply: events_pb2.ClockSyncReply, t4: int) -> SyncSample | None:
        """Feed a reply received at local time ``t4``; returns the sample if it was used."""
        t1 = self._pending.pop(reply.id, None)
        if t1 is None or t1 != reply.t1_ns:
            self.rejected += 1
            return None
        sample = SyncSample(t1=t1, t2=reply.t2_ns, t3=reply.t3_ns, t4=t4)
        try:
            self._estimator.add(sample)
        except ValueError:
            self.rejected += 1
            return None
        self.exchanges += 1
        self._estimated.set()
        return sample

    @property
    def outstanding(self) -> int:
        """Requests sent in this session that have not been answered."""
        return len(self._pending)

    def session_ended(self) -> None:
        """Replies to requests of a broken stream never come: stop waiting for them."""
        self._pending.clear()

    def collector_is(self, collector_id: str) -> None:
        """Start over when the stream now reaches a different collector."""
        if self._collector_id is not None and collector_id != self._collector_id:
            self._estimator = OffsetEstimator(self._window)
            self._estimated.clear()
        self._collector_id = collector_id

    async def wait_estimate(self, timeout_s: float) -> bool:
        """Until there is an estimate, at most ``timeout_s``; whether there is one."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._estimated.wait()
        except TimeoutError:
            return False
        return True

    def estimate(self) -> OffsetEstimate | None:
        return self._estimator.estimate()

    def describe(self) -> str:
        """The estimate for a log line: offset ± uncertainty, in ms."""
        estimate = self._estimator.estimate()
        if estimate is None:
            return "unsynced"
        return f"{estimate.offset_ns / 1e6:+.3f}ms±{estimate.uncertainty_ns / 1e6:.3f}ms"

    def current(self) -> events_pb2.ClockOffset | None:
        """The estimate as batches carry it; None before the first exchange."""
        estimate = self._estimator.estimate()
        return None if estimate is None else offset_message(estimate)


async def sync_periodically(
    send_request: Callable[[], Awaitable[None]],
    *,
    interval_s: float,
    burst: int,
    burst_gap_s: float = 0.02,
) -> None:
    """Send a burst of requests, then one per interval, until cancelled.

    ``send_request`` must take ``ClockSync.request()`` only once it may write,
    so that t1 is not stamped while waiting behind another message.
    """
    for _ in range(burst):
        await send_request()
        await asyncio.sleep(burst_gap_s)
    while True:
        await asyncio.sleep(interval_s)
        await send_request()

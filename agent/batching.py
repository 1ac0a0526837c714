"""The batcher: the ``Outbox`` the observers write to, sealing records into spooled batches.

Observers must never wait for the network or the disk (their timestamps would
suffer), so ``put_*`` only appends to a pending list and, at most, wakes the
batcher task. That task seals a batch when ``max_records`` records are pending
or when the oldest pending record is ``flush_interval_s`` old, whichever comes
first: a busy node gets full batches, a quiet one still gets every record to the
collector within the flush interval (plus the time to write the spool file).

Sealing numbers the batch, attaches the current clock offset and writes it to
the spool (agent/spool.py) before the uplink may send it. Records keep their
arrival order within a kind; a batch carries events, samples and probes in
separate lists as the wire contract has them.

One seal at a time, under a lock held from taking the records until the batch
is in the spool's index: ``flush()`` at shutdown takes the lock too, even with
nothing pending, so it returns only once a seal the batcher task had under way
is indexed as well (and the drain that follows waits for its ack).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from rtbench.clock import wall_ns
from rtbench.v1 import agent_pb2, events_pb2

from .clocksync import ClockSync
from .spool import Spool

__all__ = ["Batcher"]

log = logging.getLogger(__name__)

_Record = events_pb2.Event | events_pb2.ResourceSample | events_pb2.ProbeResult


class Batcher:
    """Implements ``agent.outbox.Outbox``; ``run()`` is the sealing loop."""

    def __init__(
        self, spool: Spool, clock: ClockSync, *, max_records: int, flush_interval_s: float
    ) -> None:
        self._spool = spool
        self._clock = clock
        self._max = max_records
        self._flush_ns = int(flush_interval_s * 1e9)
        # (arrival on the monotonic clock, record), oldest first.
        self._pending: deque[tuple[int, _Record]] = deque()
        self._wake = asyncio.Event()
        self._sealing = asyncio.Lock()
        self.sealed_batches = 0
        self.sealed_records = 0

    # -- the Outbox: never blocks, never does I/O ---------------------------------

    def put_event(self, event: events_pb2.Event) -> None:
        self._put(event)

    def put_probe(self, probe: events_pb2.ProbeResult) -> None:
        self._put(probe)

    def put_sample(self, sample: events_pb2.ResourceSample) -> None:
        self._put(sample)

    def _put(self, record: _Record) -> None:
        self._pending.append((time.monotonic_ns(), record))
        n = len(self._pending)
        if n == 1 or n >= self._max:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Records handed over but not yet sealed."""
        return len(self._pending)

    # -- sealing -------------------------------------------------------------------

    async def run(self) -> None:
        """Seal by size or age until cancelled; SpoolError ends it (and the agent)."""
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < self._max:
                due_ns = self._pending[0][0] + self._flush_ns - time.monotonic_ns()
                if due_ns > 0:
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(due_ns / 1e9):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
            await self._seal_next()

    async def flush(self) -> int:
        """Seal everything pending now (at shutdown); returns the batches sealed.

        Also waits for a seal ``run()`` has under way: when it returns, every
        record handed over before the call is in the spool's index.
        """
        sealed = 0
        while await self._seal_next() is not None:
            sealed += 1
        return sealed

    async def _seal_next(self) -> agent_pb2.Batch | None:
        # Shielded as a whole, lock included: records taken from pending must reach
        # the spool index even if this task is cancelled mid-write (shutdown), or
        # they would be lost, and flush() must not get the lock while they are on
        # their way.
        return await asyncio.shield(self._seal_locked())

    async def _seal_locked(self) -> agent_pb2.Batch | None:
        async with self._sealing:
            return await self._seal_taken()

    async def _seal_taken(self) -> agent_pb2.Batch | None:
        take = min(self._max, len(self._pending))
        if take == 0:
            return None
        events: list[events_pb2.Event] = []
        samples: list[events_pb2.ResourceSample] = []
        probes: list[events_pb2.ProbeResult] = []
        for _ in range(take):
            _, record = self._pending.popleft()
            if isinstance(record, events_pb2.Event):
                events.append(record)
            elif isinstance(record, events_pb2.ResourceSample):
                samples.append(record)
            else:
                probes.append(record)
        batch = await self._spool.seal(
            events=events,
            samples=samples,
            probes=probes,
            clock=self._clock.current(),
            sealed_ns=wall_ns(),
        )
        self.sealed_batches += 1
        self.sealed_records += take
        log.debug("sealed batch %d with %d records", batch.sequence, take)
        return batch

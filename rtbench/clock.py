"""Clocks and the NTP-style offset estimate between two machines.

The agents, rtctl and the collector run on different machines, each with its own
clock. Before their times can be compared they are put into the collector's
timebase: a client sends t1, the collector stamps t2 on receipt and t3 on reply,
the client stamps t4 on receipt. Then

    offset = ((t2 - t1) + (t3 - t4)) / 2      (collector = local + offset)
    delay  = (t4 - t1) - (t3 - t2)            (network round trip)

The true offset lies within offset ± delay/2 whatever the path asymmetry, so the
sample with the lowest delay is the most trustworthy; its half-delay is the
uncertainty reported with every corrected time.

``offset_message`` is the one place an estimate becomes the wire's
``ClockOffset``, which the agent's batches and rtctl's create record carry.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from rtbench.v1 import events_pb2

__all__ = [
    "OffsetEstimate",
    "OffsetEstimator",
    "SyncSample",
    "mono_ns",
    "offset_message",
    "wall_ns",
]


def wall_ns() -> int:
    """Wall-clock time in ns since the Unix epoch: the time every event carries."""
    return time.time_ns()


def mono_ns() -> int:
    """Monotonic time in ns: orders events of one process even if the wall clock steps."""
    return time.monotonic_ns()


@dataclass(frozen=True)
class SyncSample:
    """One exchange: t1 client send, t2 server receive, t3 server send, t4 client receive."""

    t1: int
    t2: int
    t3: int
    t4: int

    @property
    def offset_ns(self) -> int:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) // 2

    @property
    def delay_ns(self) -> int:
        # Never negative: a server that answers faster than the clocks can
        # resolve still took no negative time.
        return max(0, (self.t4 - self.t1) - (self.t3 - self.t2))


@dataclass(frozen=True)
class OffsetEstimate:
    """collector_time = local_time + offset_ns, good to ± uncertainty_ns."""

    offset_ns: int
    uncertainty_ns: int
    measured_at_ns: int
    samples: int

    def to_collector(self, local_ns: int) -> int:
        return local_ns + self.offset_ns


class OffsetEstimator:
    """Keeps the most recent exchanges and estimates from the lowest-delay one.

    A window rather than all history, so that clock drift over a long run is
    followed; lowest delay within it, so that one congested exchange does not
    move the estimate.
    """

    def __init__(self, window: int = 16) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._samples: deque[SyncSample] = deque(maxlen=window)

    def add(self, sample: SyncSample) -> None:
        if sample.t4 < sample.t1 or sample.t3 < sample.t2:
            raise ValueError(f"impossible clock-sync sample: {sample}")
        self._samples.append(sample)

    def __len__(self) -> int:
        return len(self._samples)

    def estimate(self) -> OffsetEstimate | None:
        if not self._samples:
            return None
        best = min(self._samples, key=lambda s: s.delay_ns)
        return OffsetEstimate(
            offset_ns=best.offset_ns,
            uncertainty_ns=(best.delay_ns + 1) // 2,
            measured_at_ns=best.t4,
            samples=len(self._samples),
        )


def offset_message(estimate: OffsetEstimate) -> events_pb2.ClockOffset:
    """The estimate as the wire carries it (events.proto ``ClockOffset``)."""
    return events_pb2.ClockOffset(
        offset_ns=estimate.offset_ns,
        uncertainty_ns=estimate.uncertainty_ns,
        measured_at_ns=estimate.measured_at_ns,
        samples=estimate.samples,
    )

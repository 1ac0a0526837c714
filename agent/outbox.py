"""The seam between what observes the node and what sends to the collector.

Watching, probing and sampling produce protobuf records and hand them to an
``Outbox``; the uplink implements it, batches the records and keeps them until the
collector acknowledges them. Handing over never blocks and never does I/O, so an
observer's timestamps are not delayed by the network.
"""

from __future__ import annotations

from typing import Protocol

from rtbench.v1 import events_pb2

__all__ = ["Outbox", "RecordingOutbox"]


class Outbox(Protocol):
    """Where observers put records; implementations must not block."""

    def put_event(self, event: events_pb2.Event) -> None: ...

    def put_probe(self, probe: events_pb2.ProbeResult) -> None: ...

    def put_sample(self, sample: events_pb2.ResourceSample) -> None: ...


class RecordingOutbox:
    """An outbox that keeps everything in lists: for tests and for dry runs."""

    def __init__(self) -> None:
        self.events: list[events_pb2.Event] = []
        self.probes: list[events_pb2.ProbeResult] = []
        self.samples: list[events_pb2.ResourceSample] = []

    def put_event(self, event: events_pb2.Event) -> None:
        self.events.append(event)

    def put_probe(self, probe: events_pb2.ProbeResult) -> None:
        self.probes.append(probe)

    def put_sample(self, sample: events_pb2.ResourceSample) -> None:
        self.samples.append(sample)

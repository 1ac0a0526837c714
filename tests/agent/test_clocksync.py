"""Clock sync over the uplink stream, against a collector whose clock is shifted on purpose.

The test collector adds a known shift to t2 and t3, so the true offset
(collector - agent) is exactly that shift; the estimate must lie within its own
stated uncertainty of it, and the batches must carry it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.clocksync import ClockSync
from rtbench.v1 import events_pb2
from tests.agent.fake_collector import FakeCollector
from tests.agent.harness import record, running_uplink, uplink_settings, wait_for


@pytest.mark.parametrize("shift_ns", [250_000_000, -1_500_000_000])
async def test_offset_to_a_shifted_collector(tmp_path: Path, shift_ns: int) -> None:
    async with FakeCollector(clock_shift_ns=shift_ns) as fake:
        settings = uplink_settings(fake.address, tmp_path, clock_sync_burst=8)
        async with running_uplink(settings) as stack:
            await wait_for(lambda: stack.clock.exchanges >= 8, what="the connect burst")
            estimate = stack.clock.estimate()
            assert estimate is not None
            assert abs(estimate.offset_ns - shift_ns) <= estimate.uncertainty_ns
            assert estimate.samples >= 8
            for i in range(5):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: fake.event_count() == 5, what="records")
        clock = fake.batches()[-1].clock
        assert clock.samples >= 8
        assert abs(clock.offset_ns - shift_ns) <= clock.uncertainty_ns
        assert clock.measured_at_ns > 0


async def test_sync_repeats_every_interval(tmp_path: Path) -> None:
    async with FakeCollector(clock_shift_ns=10_000_000) as fake:
        settings = uplink_settings(
            fake.address, tmp_path, clock_sync_burst=2, clock_sync_interval_s=0.2
        )
        async with running_uplink(settings) as stack:
            await wait_for(lambda: stack.clock.exchanges >= 2, what="the burst")
            await wait_for(lambda: stack.clock.exchanges >= 6, what="periodic exchanges")
            assert stack.clock.rejected == 0


async def test_batches_sealed_before_any_exchange_carry_no_offset(tmp_path: Path) -> None:
    # No collector at all: the batch is sealed and spooled without a clock.
    settings = uplink_settings("127.0.0.1:9", tmp_path)
    async with running_uplink(settings) as stack:
        stack.batcher.put_event(record(1))
        await wait_for(lambda: stack.spool.unacked == 1, what="a sealed batch")
        batch = await stack.spool.load(stack.spool.sequences()[0])
    assert batch is not None and not batch.HasField("clock")


def test_replies_are_matched_to_requests() -> None:
    clock = ClockSync()
    request = clock.request()
    assert clock.outstanding == 1
    stranger = events_pb2.ClockSyncReply(id=request.id + 100, t1_ns=request.t1_ns)
    assert clock.on_reply(stranger, t4=request.t1_ns + 10) is None
    forged = events_pb2.ClockSyncReply(id=request.id, t1_ns=request.t1_ns + 1)
    assert clock.on_reply(forged, t4=request.t1_ns + 10) is None
    assert clock.rejected == 2 and clock.current() is None
    assert clock.describe() == "unsynced"

    request = clock.request()
    t1 = request.t1_ns
    reply = events_pb2.ClockSyncReply(id=request.id, t1_ns=t1, t2_ns=t1 + 5_000, t3_ns=t1 + 6_000)
    sample = clock.on_reply(reply, t4=t1 + 3_000)
    assert sample is not None and sample.offset_ns == 4_000 and sample.delay_ns == 2_000
    current = clock.current()
    assert current is not None
    assert (current.offset_ns, current.uncertainty_ns, current.samples) == (4_000, 1_000, 1)
    assert clock.describe() == "+0.004ms±0.001ms"


def test_a_different_collector_starts_over() -> None:
    clock = ClockSync()
    clock.collector_is("a")
    request = clock.request()
    t1 = request.t1_ns
    clock.on_reply(
        events_pb2.ClockSyncReply(id=request.id, t1_ns=t1, t2_ns=t1 + 1, t3_ns=t1 + 2), t4=t1 + 3
    )
    clock.collector_is("a")
    assert clock.estimate() is not None
    clock.collector_is("b")
    assert clock.estimate() is None
    clock.request()
    clock.session_ended()
    assert clock.outstanding == 0

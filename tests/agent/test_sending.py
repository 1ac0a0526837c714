"""The uplink against a real gRPC collector on loopback: exactly once, order, faults, push back.

The test collector (fake_collector.py) is a real grpc.aio server that commits
each batch once per (agent id, sequence), like the real collector's journal.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path

import grpc

from agent.errors import PushBack, TransientError
from agent.spool import Spool, decode_batch
from rtbench.v1 import events_pb2
from tests.agent.fake_collector import FakeCollector
from tests.agent.harness import (
    Stack,
    record,
    record_ids,
    running_uplink,
    uplink_settings,
    wait_for,
)


def assert_each_once(
    fake: FakeCollector, expected: range, missing_ok: set[int] | None = None
) -> None:
    counts = Counter(record_ids(fake.events()))
    allowed = missing_ok or set()
    missing = [i for i in expected if counts[i] == 0 and i not in allowed]
    doubled = {i: n for i, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} records never arrived, e.g. {missing[:5]}"
    assert not doubled, f"records committed more than once: {list(doubled.items())[:5]}"
    assert set(counts) == set(expected) - allowed


async def feed(stack: Stack, first: int, count: int, rate: float) -> None:
    for i in range(first, first + count):
        stack.batcher.put_event(record(i))
        await asyncio.sleep(1.0 / rate)


def batch_files(stack: Stack) -> list[Path]:
    return list(stack.spool.directory.glob("*.batch"))


async def test_records_arrive_exactly_once(tmp_path: Path) -> None:
    async with FakeCollector() as fake:
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=100)
        async with running_uplink(settings) as stack:
            for i in range(3000):
                stack.batcher.put_event(record(i))
                if i % 50 == 0:
                    await asyncio.sleep(0.005)
            await wait_for(lambda: fake.event_count() >= 3000, within=60, what="all records")
            await wait_for(lambda: stack.spool.unacked == 0, within=30, what="all acks")
            counters = stack.uplink.counters
        assert_each_once(fake, range(3000))
        assert fake.hellos[0].agent_id == "test-agent"
        assert fake.hellos[0].protocol == "v1"
        assert counters.acked == counters.spooled == len(fake.committed)
        assert counters.resent == 0 and counters.reconnects == 0
        assert all(len(b.events) <= 100 for b in fake.batches())
        assert [b.sequence for b in fake.batches()] == list(range(1, len(fake.committed) + 1))
        assert batch_files(stack) == [], "acked batches are deleted from the spool"


async def test_acks_out_of_order(tmp_path: Path) -> None:
    async with FakeCollector() as fake:
        fake.ack_reversed_groups = 7
        fake.ack_delay_s = 0.05
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=20)
        async with running_uplink(settings) as stack:
            await feed(stack, 0, 1000, rate=2000)
            await wait_for(lambda: stack.spool.unacked == 0 and stack.batcher.pending == 0)
            await wait_for(lambda: fake.event_count() >= 1000, what="all records")
            # The spool forgets an acked batch a loop iteration before the uplink counts
            # the ack: wait for the counter, not only the spool.
            await wait_for(
                lambda: stack.uplink.counters.acked == len(fake.committed), what="ack counts"
            )
        acks = [seq for seq, _ in fake.acks_sent]
        assert any(b < a for a, b in itertools.pairwise(acks)), "acks came in order"
        assert_each_once(fake, range(1000))
        assert stack.uplink.counters.acked == len(fake.committed)


async def test_batches_are_sealed_by_size(tmp_path: Path) -> None:
    async with FakeCollector() as fake:
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=50)
        async with running_uplink(settings) as stack:
            for i in range(500):  # all at once: no time for the flush timer
                stack.batcher.put_event(record(i))
            await wait_for(lambda: fake.event_count() >= 500, what="all records")
        assert [len(b.events) for b in fake.batches()] == [50] * 10


async def test_batches_are_sealed_by_age(tmp_path: Path) -> None:
    # Records trickle in far below the size limit: only the flush timer seals them.
    # Margin: a loaded 2-core machine may run the timer late; the check is that
    # records are not kept waiting for a full batch, not how fast the machine is.
    flush, margin = 0.1, 1.0
    async with FakeCollector() as fake:
        settings = uplink_settings(fake.address, tmp_path, flush_interval_s=flush)
        async with running_uplink(settings) as stack:
            await feed(stack, 0, 60, rate=40)
            await wait_for(lambda: fake.event_count() >= 60, what="all records")
        batches = fake.batches()
        assert len(batches) >= 3, "records waited for a full batch"
        for batch in batches:
            oldest = min(e.time_ns for e in batch.events)
            age = (batch.sealed_ns - oldest) / 1e9
            assert 0 <= age < flush + margin, f"batch {batch.sequence} sealed {age:.3f} s late"


async def test_window_bounds_batches_in_flight(tmp_path: Path) -> None:
    async with FakeCollector() as fake:
        fake.ack_delay_s = 3600  # commits, never acks
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=1, window=4)
        async with running_uplink(settings) as stack:
            for i in range(12):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: stack.spool.unacked == 12, what="12 batches spooled")
            await wait_for(lambda: len(fake.received) == 4, what="a full window")
            await asyncio.sleep(0.5)
            assert len(fake.received) == 4
            assert [seq for _, seq in fake.received] == [1, 2, 3, 4]


async def test_collector_down_for_10_s_loses_nothing(tmp_path: Path) -> None:
    fake = FakeCollector()
    await fake.start()
    try:
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=25)
        async with running_uplink(settings) as stack:
            feeding = asyncio.create_task(feed(stack, 0, 3000, rate=200))
            await wait_for(lambda: fake.event_count() >= 300, within=60, what="first records")
            # The last batches before the outage reach the collector but are never
            # committed (it dies first): only a resend can save them.
            fake.lose_batches = True
            await wait_for(lambda: len(fake.received) >= len(fake.committed) + 3)
            await fake.stop()
            await wait_for(lambda: not stack.uplink.connected, what="the uplink to notice")
            await asyncio.sleep(10)
            assert isinstance(stack.uplink.last_error, TransientError)
            assert stack.spool.unacked > 0 and not feeding.done()
            fake.lose_batches = False
            await fake.start()
            await feeding
            await wait_for(lambda: fake.event_count() >= 3000, within=60, what="all records")
            await wait_for(lambda: stack.spool.unacked == 0, within=30, what="all acks")
            counters = stack.uplink.counters
    finally:
        await fake.stop()
    assert_each_once(fake, range(3000))
    assert counters.reconnects >= 1
    assert counters.resent >= 3
    assert counters.acked == counters.spooled
    received = Counter(fake.received)
    assert any(n > 1 for n in received.values()), "nothing was ever resent"


async def test_push_back_keeps_the_data(tmp_path: Path) -> None:
    async with FakeCollector() as fake:
        fake.refuse = grpc.StatusCode.RESOURCE_EXHAUSTED
        settings = uplink_settings(fake.address, tmp_path)
        async with running_uplink(settings) as stack:
            await feed(stack, 0, 100, rate=1000)
            await wait_for(lambda: isinstance(stack.uplink.last_error, PushBack))
            await wait_for(lambda: stack.uplink.counters.reconnects >= 2, what="retries")
            assert stack.spool.unacked > 0 and not fake.committed
            assert "pushes back" in str(stack.uplink.last_error)
            fake.refuse = None
            await wait_for(lambda: fake.event_count() >= 100, what="all records")
        assert_each_once(fake, range(100))


async def test_welcome_committed_sequence_is_honoured(tmp_path: Path) -> None:
    async with FakeCollector() as fake:
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=10)
        # A first life of this agent id sends 3 batches.
        async with running_uplink(settings) as stack:
            for i in range(30):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: stack.spool.unacked == 0 and len(fake.committed) == 3)
        # Its state dir is lost; the same id (e.g. --agent-id) starts from scratch.
        fresh = uplink_settings(fake.address, tmp_path / "new-state", batch_max_events=10)
        async with running_uplink(fresh) as stack:
            await wait_for(lambda: stack.uplink.connected)
            for i in range(30, 40):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: fake.event_count() >= 40, what="the new batch")
            assert stack.spool.last_sequence == 4, "sequence skipped past the collector's"
        assert_each_once(fake, range(40))


async def test_resent_committed_batches_are_acked_as_duplicates(tmp_path: Path) -> None:
    fake = FakeCollector()
    await fake.start()
    try:
        # Batch 1 is lost, 2-5 are committed but their acks never leave: after the
        # restart the collector holds 2-5 but not contiguously from 1.
        fake.lose_sequences = {1}
        fake.ack_delay_s = 3600
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=10)
        async with running_uplink(settings) as stack:
            for i in range(50):
                stack.batcher.put_event(record(i))
            await wait_for(lambda: len(fake.committed) == 4, what="batches 2-5 committed")
            await fake.stop()
            fake.ack_delay_s = 0
            await fake.start()
            await wait_for(lambda: stack.spool.unacked == 0, what="all acks")
            # The spool counts an entry acked while the uplink is still awaiting the
            # spool's file work for it; the uplink's counters follow a moment later.
            await wait_for(lambda: stack.uplink.counters.acked == 5, what="5 acks counted")
            counters = stack.uplink.counters
    finally:
        await fake.stop()
    # On a loaded machine a session can end once more before every ack is in, and the
    # resend repeats: what must hold is that 2-5 are only ever acked as duplicates.
    acks = set(fake.acks_sent)
    assert {(1, False), (2, True), (3, True), (4, True), (5, True)} <= acks
    assert not {(2, False), (3, False), (4, False), (5, False)} & acks
    assert counters.duplicates == 4
    assert_each_once(fake, range(50))


async def test_a_refused_batch_is_set_aside_and_the_rest_flows(tmp_path: Path) -> None:
    async with FakeCollector() as fake:
        fake.reject_sequences = {3}
        settings = uplink_settings(fake.address, tmp_path, batch_max_events=10)
        async with running_uplink(settings) as stack:
            await feed(stack, 0, 100, rate=2000)
            await wait_for(lambda: stack.batcher.sealed_records == 100, what="all sealed")
            await wait_for(lambda: stack.spool.unacked == 0, what="all acked or set aside")
            counters = stack.uplink.counters
            rejected_files = list(stack.spool.directory.glob("*.rejected"))
        refused = set(record_ids(_batch_events(rejected_files)))
        assert counters.rejected == 1
        assert len(rejected_files) == 1 and rejected_files[0].name.startswith(f"{3:020d}")
        assert refused, "the refused batch keeps its records on disk"
        assert_each_once(fake, range(100), missing_ok=refused)
        assert (fake.hellos[0].agent_id, 3) not in fake.committed


def _batch_events(paths: list[Path]) -> list[events_pb2.Event]:
    batches = [decode_batch(p.read_bytes()) for p in paths]
    return [e for b in batches if b is not None for e in b.events]


async def test_batches_sealed_before_any_clock_exchange_carry_the_offset(
    tmp_path: Path,
) -> None:
    shift = 250_000_000
    fake = FakeCollector(clock_shift_ns=shift)
    settings = uplink_settings(fake.address, tmp_path, batch_max_events=10)
    async with running_uplink(settings) as stack:
        await feed(stack, 0, 50, rate=2000)
        await wait_for(lambda: stack.batcher.sealed_records == 50, what="sealed while no collector")
        assert stack.spool.unacked >= 5
        assert stack.uplink.counters.clock_exchanges == 0
        async with fake:
            await wait_for(lambda: stack.spool.unacked == 0, what="all acks")
    assert_each_once(fake, range(50))
    for batch in fake.batches():
        assert batch.HasField("clock"), f"batch {batch.sequence} went without an offset"
        assert abs(batch.clock.offset_ns - shift) <= batch.clock.uncertainty_ns


async def test_a_spooled_batch_whose_file_vanished_does_not_stall_the_uplink(
    tmp_path: Path,
) -> None:
    fake = FakeCollector()
    settings = uplink_settings(fake.address, tmp_path)
    earlier = Spool.open(
        settings.state_dir / "spool" / "test-agent", max_bytes=2**30, memory_batches=0
    )
    for first in (0, 10, 20):
        await earlier.seal(
            events=[record(i) for i in range(first, first + 10)],
            samples=[],
            probes=[],
            clock=None,
            sealed_ns=1,
        )
    async with running_uplink(settings) as stack:
        assert stack.spool.sequences() == [1, 2, 3] and stack.spool.in_memory == 0
        # Indexed, yet gone from disk: what an ack cancelled mid-delete used to leave.
        (stack.spool.directory / f"{1:020d}.batch").unlink()
        async with fake:
            await wait_for(lambda: stack.spool.unacked == 0, what="batches 2 and 3 acked")
    assert_each_once(fake, range(10, 30))
    assert [b.sequence for b in fake.batches()] == [2, 3]

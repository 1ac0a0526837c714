"""The spool on a real file system: durability across reopen, crash leftovers, overflow,
and callers cancelled in the middle of deleting a batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from agent.errors import StartupError
from agent.spool import Spool, load_or_create_agent_id, other_spools
from rtbench.v1 import events_pb2
from tests.agent.harness import record, record_ids, wait_for


def open_spool(path: Path, *, max_bytes: int = 2**30, memory_batches: int = 100) -> Spool:
    return Spool.open(path, max_bytes=max_bytes, memory_batches=memory_batches)


async def seal(spool: Spool, first: int, count: int) -> int:
    batch = await spool.seal(
        events=[record(i) for i in range(first, first + count)],
        samples=[events_pb2.ResourceSample(time_ns=1, mem_total_bytes=10)],
        probes=[],
        clock=events_pb2.ClockOffset(offset_ns=5, uncertainty_ns=1, samples=1),
        sealed_ns=123,
    )
    return batch.sequence


def batch_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".batch"))


async def test_batches_survive_reopen_and_sequences_continue(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    assert [await seal(spool, i * 10, 10) for i in range(3)] == [1, 2, 3]
    assert len(batch_files(tmp_path / "s")) == 3

    again = open_spool(tmp_path / "s")
    assert again.sequences() == [1, 2, 3]
    assert again.in_memory == 0
    batch = await again.load(2)
    assert batch is not None
    assert record_ids(batch.events) == list(range(10, 20))
    assert batch.clock.offset_ns == 5 and batch.sealed_ns == 123 and len(batch.samples) == 1

    for seq in (1, 2, 3):
        assert await again.ack(seq)
    assert not await again.ack(2), "an ack for a batch no longer held is reported"
    assert batch_files(tmp_path / "s") == []
    # Everything acked and deleted: the sequence file alone keeps numbers unique.
    third = open_spool(tmp_path / "s")
    assert third.unacked == 0
    assert await seal(third, 0, 1) == 4


async def test_half_written_temp_files_are_ignored_and_removed(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    await seal(spool, 0, 5)
    # What a crash between write and rename leaves behind: a truncated temp file.
    leftover = tmp_path / "s" / ".00000000000000000002.batch.tmp"
    leftover.write_bytes(b"RTB1\x00\x00\x01")
    again = open_spool(tmp_path / "s")
    assert again.sequences() == [1]
    assert not leftover.exists()
    assert await seal(again, 5, 1) == 2


async def test_damaged_batch_file_is_set_aside_and_counted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    await seal(spool, 0, 5)
    await seal(spool, 5, 5)
    path = tmp_path / "s" / "00000000000000000001.batch"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    again = open_spool(tmp_path / "s")
    assert await again.load(1) is None
    assert again.counters.corrupt == 1
    assert again.sequences() == [2]
    assert (tmp_path / "s" / "00000000000000000001.corrupt").exists()
    second = await again.load(2)
    assert second is not None and record_ids(second.events) == list(range(5, 10))


async def test_memory_holds_only_the_configured_number_of_batches(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s", memory_batches=2)
    for i in range(5):
        await seal(spool, i * 3, 3)
    assert spool.in_memory == 2
    for seq in range(1, 6):
        batch = await spool.load(seq)
        assert batch is not None
        assert record_ids(batch.events) == list(range((seq - 1) * 3, seq * 3))


async def test_overflow_drops_oldest_counts_and_logs_once_per_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    probe = open_spool(tmp_path / "probe")
    await seal(probe, 0, 10)
    size = probe.bytes_used
    spool = open_spool(tmp_path / "s", max_bytes=size * 3 + size // 2)
    caplog.set_level(logging.WARNING, logger="agent.spool")
    for i in range(8):
        await seal(spool, i * 10, 10)
    assert spool.sequences() == [6, 7, 8]
    assert spool.bytes_used <= spool.max_bytes
    assert spool.counters.dropped_overflow == 5
    assert spool.counters.dropped_records == 5 * 11  # 10 events and one sample each
    assert spool.counters.overflow_episodes == 1
    assert batch_files(tmp_path / "s") == [f"{s:020d}.batch" for s in (6, 7, 8)]
    starts = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(starts) == 1

    # The collector catches up: the next seal fits, and the episode's count is logged.
    await spool.ack(6)
    await spool.ack(7)
    await seal(spool, 80, 10)
    ends = [r.getMessage() for r in caplog.records if "overflow ended" in r.getMessage()]
    assert ends == ["spool overflow ended: dropped 5 batches (55 records)"]
    # A second episode is a second start line.
    for i in range(3):
        await seal(spool, 90 + i * 10, 10)
    assert spool.counters.overflow_episodes == 2
    assert len([r for r in caplog.records if "dropping the oldest" in r.getMessage()]) == 2


async def test_ack_through_and_advance_sequence(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s")
    for i in range(4):
        await seal(spool, i, 1)
    assert await spool.ack_through(2) == 2
    assert spool.sequences() == [3, 4]
    await spool.advance_sequence(10)
    assert await seal(spool, 9, 1) == 11
    assert open_spool(tmp_path / "s").last_sequence == 11


def test_agent_id_is_persisted_per_state_dir(tmp_path: Path) -> None:
    first = load_or_create_agent_id(tmp_path / "a", "node-1")
    assert first.startswith("node-1-") and len(first) == len("node-1-") + 8
    assert load_or_create_agent_id(tmp_path / "a", "node-1") == first
    assert load_or_create_agent_id(tmp_path / "b", "node-1") != first


def test_unusable_state_dir_is_a_startup_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StartupError, match="cannot keep the agent id"):
        load_or_create_agent_id(blocker / "state", "node-1")
    with pytest.raises(StartupError, match="cannot use the spool directory"):
        open_spool(blocker / "spool")


async def test_spools_of_other_agent_ids_are_found(tmp_path: Path) -> None:
    old = open_spool(tmp_path / "spool" / "node-1-aaaaaaaa")
    await seal(old, 0, 1)
    await seal(old, 1, 1)
    open_spool(tmp_path / "spool" / "node-1-bbbbbbbb")
    assert other_spools(tmp_path / "spool", "node-1-bbbbbbbb") == {"node-1-aaaaaaaa": 2}
    assert other_spools(tmp_path / "spool", "node-1-aaaaaaaa") == {}
    assert other_spools(tmp_path / "missing", "x") == {}


async def test_overflow_counts_records_of_batches_from_an_earlier_run(tmp_path: Path) -> None:
    earlier = open_spool(tmp_path / "s")
    for i in range(3):
        await seal(earlier, i * 10, 10)
    size = earlier.bytes_used // 3
    spool = open_spool(tmp_path / "s", max_bytes=size * 2 + size // 2)
    await seal(spool, 30, 10)
    assert spool.sequences() == [3, 4]
    assert spool.counters.dropped_overflow == 2
    assert spool.counters.dropped_records == 2 * 11


async def cancel_while_deleting(call: Coroutine[Any, Any, object]) -> None:
    """Start a spool call, cancel its caller once the file is on its way out, as a
    cancelled uplink session does mid-ack."""
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0)  # now awaiting the file operation in a thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("how", ["ack", "ack_through"])
async def test_a_cancelled_ack_still_forgets_the_batch(tmp_path: Path, how: str) -> None:
    spool = open_spool(tmp_path / "s", memory_batches=0)
    await seal(spool, 0, 1)
    await seal(spool, 1, 1)
    changed = spool.change()
    call = spool.ack(1) if how == "ack" else spool.ack_through(1)
    await cancel_while_deleting(call)
    await wait_for(lambda: spool.sequences() == [2], what="batch 1 leaving the index")
    assert changed.is_set(), "the index change is announced"
    assert batch_files(tmp_path / "s") == [f"{2:020d}.batch"]
    assert spool.next_after(0) == 2 and spool.count_upto(1) == 0


async def test_a_cancelled_reject_still_sets_the_batch_aside(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s", memory_batches=0)
    await seal(spool, 0, 1)
    await seal(spool, 1, 1)
    await cancel_while_deleting(spool.reject(1))
    await wait_for(lambda: spool.sequences() == [2], what="batch 1 leaving the index")
    assert spool.counters.rejected == 1
    assert (tmp_path / "s" / f"{1:020d}.rejected").exists()


async def test_a_batch_whose_file_vanished_counts_as_acknowledged(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s", memory_batches=0)
    await seal(spool, 0, 1)
    await seal(spool, 1, 1)
    (tmp_path / "s" / f"{1:020d}.batch").unlink()  # what a cancelled ack used to leave
    changed = spool.change()
    assert await spool.load(1) is None
    assert spool.sequences() == [2], "a sender asking for batch 1 again would never move on"
    assert changed.is_set()
    assert spool.counters.corrupt == 0
    second = await spool.load(2)
    assert second is not None and record_ids(second.events) == [1]

"""The batcher with a real spool: the shutdown flush waits for a seal already under way.

At shutdown the agent calls ``flush()`` while the batcher task still runs. If
that task has just taken the last records and is writing them to the spool
(fsync), nothing is pending any more; ``flush()`` must still not return before
that batch is in the spool's index, or the drain that follows could find the
spool empty and report every batch acknowledged while one is on its way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.batching import Batcher
from agent.clocksync import ClockSync
from agent.spool import Spool
from tests.agent.harness import record, record_ids


async def test_flush_waits_for_the_seal_the_batcher_task_has_under_way(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "spool", max_bytes=2**30, memory_batches=10)
    batcher = Batcher(spool, ClockSync(), max_records=5, flush_interval_s=0.1)
    task = asyncio.get_running_loop().create_task(batcher.run(), name="batcher")
    try:
        for i in range(5):  # a full batch: the batcher task seals at once
            batcher.put_event(record(i))
        async with asyncio.timeout(60):
            while batcher.pending:  # noqa: ASYNC110 - stop the moment the records are taken
                await asyncio.sleep(0)
        # The records are taken; their batch is still being written (a thread's fsync
        # completes only after further loop iterations, and none has run since).
        assert spool.unacked == 0 and batcher.sealed_batches == 0
        assert await batcher.flush() == 0, "nothing was left for flush() itself to seal"
        assert spool.sequences() == [1], "flush() returned before the batch was indexed"
        batch = await spool.load(1)
        assert batch is not None and record_ids(batch.events) == list(range(5))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_flush_seals_what_is_pending_in_full_batches(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path / "spool", max_bytes=2**30, memory_batches=10)
    batcher = Batcher(spool, ClockSync(), max_records=4, flush_interval_s=0.1)
    for i in range(10):
        batcher.put_event(record(i))
    assert await batcher.flush() == 3
    assert batcher.pending == 0 and spool.sequences() == [1, 2, 3]
    loaded = [await spool.load(seq) for seq in (1, 2, 3)]
    assert [record_ids(b.events) for b in loaded if b is not None] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert await batcher.flush() == 0

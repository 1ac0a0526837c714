"""The shared full-jitter backoff (rtbench/backoff.py) the agent's reconnect loops use."""

from __future__ import annotations

import asyncio
import random

import pytest

from rtbench.backoff import full_jitter, hold_group_open, raise_if_cancelled


@pytest.mark.parametrize("attempt", [1024, 1025, 5000, 10**6, 10**100])
def test_huge_attempt_counts_stay_at_the_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    delays = [full_jitter(attempt, 0.1, 5.0, rng) for _ in range(500)]
    assert all(0.0 <= d <= 5.0 for d in delays)
    assert max(delays) > 4.5, "the cap is the ceiling, not something below it"


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(-3, 0.1), (0, 0.1), (1, 0.2), (2, 0.4), (5, 3.2), (6, 5.0)]
)
def test_the_ceiling_doubles_per_attempt_up_to_the_cap(attempt: int, ceiling: float) -> None:
    rng = random.Random(7)
    delays = [full_jitter(attempt, 0.1, 5.0, rng) for _ in range(1000)]
    assert all(0.0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.95 and min(delays) < ceiling * 0.05, "uniform over it all"


def test_the_same_seed_gives_the_same_waits() -> None:
    first = [full_jitter(a, 0.1, 5.0, random.Random(1)) for a in range(40)]
    again = [full_jitter(a, 0.1, 5.0, random.Random(1)) for a in range(40)]
    assert first == again


def test_a_huge_first_wait_is_still_capped() -> None:
    assert 0.0 <= full_jitter(10**9, 1e300, 30.0, random.Random(3)) <= 30.0


async def _session_failing_at(moment: asyncio.Event) -> None:
    """A session whose child fails the moment it is told to, as a stream does when its
    server goes away."""

    async def child() -> None:
        await moment.wait()
        raise ConnectionError("stream ended")

    async with asyncio.TaskGroup() as group:
        group.create_task(child())
        await hold_group_open()


@pytest.mark.parametrize("guarded", [True, False])
async def test_a_retry_loop_cancelled_as_its_session_fails_stops(guarded: bool) -> None:
    """The child fails in the same loop step as the cancel arrives: the TaskGroup raises
    the child's error, not the cancel. With raise_if_cancelled the loop stops; without
    it the loop would go on retrying (shown by the unguarded variant). The uplink and
    the containerd reader run their sessions this way."""
    moment = asyncio.Event()
    retries = 0

    async def loop() -> None:
        nonlocal retries
        while True:
            try:
                await _session_failing_at(moment)
            except* ConnectionError:
                if guarded:
                    raise_if_cancelled()
            retries += 1
            if retries > 3:
                return  # the unguarded loop ends here only because the test says so
            await asyncio.sleep(0)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    moment.set()
    task.cancel()
    if guarded:
        with pytest.raises(asyncio.CancelledError):
            await task
        assert retries == 0
    else:
        await task
        assert retries > 3, "the cancel was lost: the unguarded loop kept retrying"


async def test_a_session_failing_on_its_own_is_not_taken_for_a_cancel() -> None:
    """With the group held open, a child's failure leaves no cancel counted on the task,
    so the retry loop retries."""
    moment = asyncio.Event()
    moment.set()
    with pytest.raises(ExceptionGroup):
        await _session_failing_at(moment)
    raise_if_cancelled()  # nothing pending: does not raise
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0

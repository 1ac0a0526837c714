"""Full-jitter exponential backoff, the one formula every reconnect loop uses.

The agent reconnects to the API server and to the collector, each forever; a
loop that has failed a thousand times must still compute its next wait. So the
exponent is clamped before it is raised: ``2 ** attempt`` on a float overflows
(``OverflowError``) once ``attempt`` passes 1023, and an int that large only
turns into the same error when multiplied by a float. Full jitter (a uniform
wait between zero and the ceiling) spreads the agents of a cluster that lost
the same server at the same moment, instead of bringing them back in step.

Such a loop also has to stop when its task is cancelled: ``raise_if_cancelled``.
"""

from __future__ import annotations

import asyncio
import random

__all__ = ["MAX_EXPONENT", "full_jitter", "hold_group_open", "raise_if_cancelled"]

MAX_EXPONENT = 64
"""Beyond 2**64 times any sensible first wait, the cap has long taken over."""


def full_jitter(attempt: int, first_s: float, cap_s: float, rng: random.Random) -> float:
    """A wait uniform in [0, min(cap_s, first_s * 2**attempt)]; attempt 0 is the first retry.

    Any attempt count is fine (negative counts as 0, huge ones hit the cap).
    """
    exponent = min(max(attempt, 0), MAX_EXPONENT)
    ceiling = min(cap_s, first_s * 2.0**exponent)
    return rng.uniform(0.0, ceiling)


def raise_if_cancelled() -> None:
    """Raise CancelledError when the current task has a cancel pending.

    A retry loop catches the errors of a session run under a TaskGroup. When a child
    fails at the moment the loop's task is cancelled, the TaskGroup raises the child's
    error and not the cancel (Python 3.11), so a loop that only looked at the error would
    retry forever and its task could never be stopped. Call this where the error is
    caught, with the session's TaskGroup body held open (``hold_group_open``).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def hold_group_open() -> None:
    """The last await in the body of a TaskGroup whose tasks run until one fails.

    The failure then cancels the body, and the TaskGroup takes back its own cancel
    request, so ``raise_if_cancelled`` afterwards sees only a real cancel. Python 3.11's
    TaskGroup leaves that request counted on the task when the body had already ended
    (fixed in 3.12), which would look like a cancel forever after.
    """
    await asyncio.get_running_loop().create_future()

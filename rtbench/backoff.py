"""Full-jitter exponential backoff, the one formula every reconnect loop uses.

The agent reconnects to the API server and to the collector, each forever; a
loop that has failed a thousand times must still compute its next wait. So the
exponent is clamped before it is raised: ``2 ** attempt`` on a float overflows
(``OverflowError``) once ``attempt`` passes 1023, and an int that large only
turns into the same error when multiplied by a float. Full jitter (a uniform
wait between zero and the ceiling) spreads the agents of a cluster that lost
the same server at the same moment, instead of bringing them back in step.
"""

from __future__ import annotations

import random

__all__ = ["MAX_EXPONENT", "full_jitter"]

MAX_EXPONENT = 64
"""Beyond 2**64 times any sensible first wait, the cap has long taken over."""


def full_jitter(attempt: int, first_s: float, cap_s: float, rng: random.Random) -> float:
    """A wait uniform in [0, min(cap_s, first_s * 2**attempt)]; attempt 0 is the first retry.

    Any attempt count is fine (negative counts as 0, huge ones hit the cap).
    """
    exponent = min(max(attempt, 0), MAX_EXPONENT)
    ceiling = min(cap_s, first_s * 2.0**exponent)
    return rng.uniform(0.0, ceiling)

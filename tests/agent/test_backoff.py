"""The shared full-jitter backoff (rtbench/backoff.py) the agent's reconnect loops use."""

from __future__ import annotations

import random

import pytest

from rtbench.backoff import full_jitter


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

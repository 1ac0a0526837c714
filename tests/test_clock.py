"""The offset estimate recovers a known offset within its stated uncertainty."""

from __future__ import annotations

import random

import pytest

from rtbench.clock import OffsetEstimator, SyncSample


def exchange(offset: int, out_delay: int, back_delay: int, service: int, t1: int) -> SyncSample:
    """Simulates one exchange against a server whose clock is local + offset."""
    t2 = t1 + out_delay + offset
    t3 = t2 + service
    t4 = t3 - offset + back_delay
    return SyncSample(t1, t2, t3, t4)


def test_symmetric_path_gives_exact_offset() -> None:
    sample = exchange(
        offset=5_000_000, out_delay=300_000, back_delay=300_000, service=1000, t1=10**18
    )
    assert sample.offset_ns == 5_000_000
    assert sample.delay_ns == 600_000


@pytest.mark.parametrize("seed", range(5))
def test_true_offset_within_uncertainty_with_asymmetric_delays(seed: int) -> None:
    rng = random.Random(seed)
    true_offset = rng.randint(-(10**9), 10**9)
    est = OffsetEstimator(window=8)
    t = 10**18
    for _ in range(20):
        est.add(
            exchange(
                true_offset,
                rng.randint(50_000, 5_000_000),
                rng.randint(50_000, 5_000_000),
                rng.randint(0, 100_000),
                t,
            )
        )
        t += 10**9
    result = est.estimate()
    assert result is not None
    assert abs(result.offset_ns - true_offset) <= result.uncertainty_ns
    assert result.samples == 8


def test_lowest_delay_sample_wins() -> None:
    est = OffsetEstimator()
    est.add(exchange(1_000, 9_000_000, 1_000_000, 0, 0))  # congested, skewed
    est.add(exchange(1_000, 100_000, 100_000, 0, 10**9))  # clean
    result = est.estimate()
    assert result is not None
    assert result.offset_ns == 1_000
    assert result.uncertainty_ns == 100_000
    assert result.to_collector(5) == 1_005


def test_empty_and_impossible_samples() -> None:
    est = OffsetEstimator()
    assert est.estimate() is None
    with pytest.raises(ValueError):
        est.add(SyncSample(t1=10, t2=0, t3=0, t4=5))
    with pytest.raises(ValueError):
        OffsetEstimator(window=0)

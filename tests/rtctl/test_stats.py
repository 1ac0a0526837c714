"""rtctl.stats on data whose answers are known: nearest-rank percentiles, the bootstrap
interval on a ratio (coverage, seeding, narrowing), and the spread across repetitions."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import collector.summaries
import rtbench.percentiles
from rtctl.stats import (
    Distribution,
    Spread,
    bootstrap_ratio,
    bootstrap_ratio_runs,
    fraction_rank,
    nearest_rank,
    resampled_percentiles,
)

MS = 1_000_000


def lognormal_ms(rng: random.Random, n: int, median_ms: float, sigma: float = 0.4) -> list[int]:
    """Latencies (ns) whose population median is exactly ``median_ms``."""
    return [int(median_ms * MS * rng.lognormvariate(0.0, sigma)) for _ in range(n)]


def test_percentiles_on_known_data() -> None:
    hundred = Distribution.of(list(range(100, 0, -1)))  # unsorted input is fine
    assert hundred == Distribution(count=100, min_ns=1, p50_ns=50, p90_ns=90, p99_ns=99, max_ns=100)
    ten = Distribution.of([10 * MS * i for i in range(1, 11)])
    assert (ten.p50_ns, ten.p90_ns, ten.p99_ns) == (50 * MS, 90 * MS, 100 * MS)
    assert Distribution.of([7]) == Distribution(1, 7, 7, 7, 7, 7)
    assert Distribution.of([]) == Distribution(0, 0, 0, 0, 0, 0)


def test_the_collector_and_rtctl_share_one_definition() -> None:
    assert collector.summaries.nearest_rank is rtbench.percentiles.nearest_rank
    assert nearest_rank is rtbench.percentiles.nearest_rank


@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=300))
def test_a_percentile_is_a_real_value_with_enough_values_at_or_below(values: list[int]) -> None:
    ordered = sorted(values)
    for percent in (1, 50, 90, 99, 100):
        p = nearest_rank(ordered, percent)
        assert p in values
        at_or_below = sum(v <= p for v in values)
        below = sum(v < p for v in values)
        assert at_or_below * 100 >= percent * len(values)
        assert below * 100 < percent * len(values)  # the smallest such value


def test_fraction_rank_picks_the_interval_ends_of_2000_resamples() -> None:
    values = [float(v) for v in range(1, 2001)]
    assert fraction_rank(values, 0.025) == 50.0
    assert fraction_rank(values, 0.975) == 1950.0
    assert fraction_rank(values, 0.0) == 1.0
    assert fraction_rank(values, 1.0) == 2000.0
    with pytest.raises(ValueError):
        fraction_rank([], 0.5)
    with pytest.raises(ValueError):
        fraction_rank(values, 1.5)


@pytest.mark.parametrize("percent", [50, 90])
def test_one_beta_draw_resamples_like_literal_resampling(percent: int) -> None:
    """The shortcut and the textbook bootstrap pick each pod's latency equally often."""
    values = list(range(25))
    draws = 20_000
    shortcut = Counter(resampled_percentiles(values, percent, draws, random.Random(1)))
    literal_rng = random.Random(2)
    literal: Counter[int] = Counter()
    for _ in range(draws):
        sample = sorted(literal_rng.choices(values, k=len(values)))
        literal[nearest_rank(sample, percent)] += 1
    distance = sum(abs(shortcut[v] - literal[v]) for v in values) / (2 * draws)
    assert distance < 0.03, (sorted(shortcut.items()), sorted(literal.items()))
    # Not a degenerate agreement: the resampled percentile really varies.
    assert len(literal) >= 5


def test_the_interval_contains_a_known_ratio() -> None:
    # One fixed draw; a 95 % interval misses about one draw in 20 (random.Random(11)
    # is such a draw), which is why the coverage test below checks the rate.
    rng = random.Random(12)
    baseline = lognormal_ms(rng, 300, 200.0)
    slower = lognormal_ms(rng, 300, 300.0)
    interval = bootstrap_ratio(slower, baseline, seed=3)
    assert interval is not None
    assert interval.contains(1.5), interval
    assert interval.low < interval.ratio < interval.high
    assert (interval.count, interval.baseline_count, interval.resamples) == (300, 300, 2000)
    assert (interval.percent, interval.confidence) == (50, 0.95)


def test_the_95_percent_interval_covers_the_true_ratio_about_95_percent_of_the_time() -> None:
    rng = random.Random(5)
    datasets = 200
    covered = 0
    for i in range(datasets):
        interval = bootstrap_ratio(
            lognormal_ms(rng, 80, 300.0), lognormal_ms(rng, 80, 200.0), resamples=1000, seed=i
        )
        assert interval is not None
        covered += interval.contains(1.5)
    # Binomial(200, 0.95) stays within these bounds with overwhelming probability;
    # an interval that is too narrow (or always everything) does not.
    assert 0.88 * datasets <= covered <= 0.995 * datasets, covered


def test_the_interval_is_seeded_and_repeatable() -> None:
    rng = random.Random(9)
    ours, theirs = lognormal_ms(rng, 100, 250.0), lognormal_ms(rng, 100, 200.0)
    first = bootstrap_ratio(ours, theirs, seed="7:kata-qemu:first_response")
    again = bootstrap_ratio(list(reversed(ours)), theirs, seed="7:kata-qemu:first_response")
    other = bootstrap_ratio(ours, theirs, seed="8:kata-qemu:first_response")
    assert first == again
    assert other is not None and first is not None
    assert (other.low, other.high) != (first.low, first.high)
    assert other.ratio == first.ratio  # the point estimate does not depend on the seed


def test_the_interval_narrows_with_more_pods() -> None:
    rng = random.Random(4)

    def width(n: int) -> float:
        interval = bootstrap_ratio(lognormal_ms(rng, n, 300.0), lognormal_ms(rng, n, 200.0))
        assert interval is not None
        return interval.high - interval.low

    few, many = width(30), width(3000)
    # Width shrinks like 1/sqrt(n): a factor of ~10 here; ask for 3.
    assert many * 3 < few, (few, many)


def test_other_percentiles_and_confidences() -> None:
    rng = random.Random(6)
    ours, theirs = lognormal_ms(rng, 500, 400.0), lognormal_ms(rng, 500, 200.0)
    p90 = bootstrap_ratio(ours, theirs, percent=90)
    assert p90 is not None and p90.contains(2.0)
    assert p90.ratio == nearest_rank(sorted(ours), 90) / nearest_rank(sorted(theirs), 90)
    wide = bootstrap_ratio(ours, theirs, confidence=0.99)
    narrow = bootstrap_ratio(ours, theirs, confidence=0.5)
    assert wide is not None and narrow is not None
    assert wide.low < narrow.low < narrow.high < wide.high


def test_no_ratio_without_pods_or_with_a_zero_baseline() -> None:
    assert bootstrap_ratio([], [MS]) is None
    assert bootstrap_ratio([MS], []) is None
    assert bootstrap_ratio([MS, 2 * MS], [0, 0, 0]) is None
    for bad in ({"resamples": 0}, {"confidence": 1.0}, {"percent": 0}):
        with pytest.raises(ValueError):
            bootstrap_ratio([MS], [MS], **bad)


def test_spread_across_repetitions() -> None:
    spread = Spread.of([300 * MS, 100 * MS, 200 * MS, 250 * MS])
    assert spread == Spread(count=4, median=200 * MS, low=100 * MS, high=300 * MS)
    assert math.isclose(spread.relative, 1.0)
    assert Spread.of([]) == Spread(0, 0, 0, 0)
    assert Spread.of([]).relative == 0.0


def test_runs_that_disagree_widen_the_interval_beyond_the_pooled_pods_one() -> None:
    # Three runs per runtime whose medians differ twofold: pods of one run move together,
    # which the pooled one-stage bootstrap cannot see and the two-stage one must.
    rng = random.Random(5)
    ours = [lognormal_ms(rng, 60, median, sigma=0.1) for median in (500.0, 1000.0, 1500.0)]
    theirs = [lognormal_ms(rng, 60, median, sigma=0.1) for median in (250.0, 500.0, 750.0)]
    pooled = bootstrap_ratio(
        [v for run in ours for v in run], [v for run in theirs for v in run], seed=1
    )
    two_stage = bootstrap_ratio_runs(ours, theirs, seed=1)
    assert pooled is not None and two_stage is not None
    assert two_stage.ratio == pooled.ratio  # the same point estimate
    assert two_stage.contains(two_stage.ratio)
    assert (two_stage.high - two_stage.low) > 2 * (pooled.high - pooled.low)


def test_one_run_per_side_is_the_one_stage_bootstrap() -> None:
    rng = random.Random(6)
    ours, theirs = lognormal_ms(rng, 80, 900.0), lognormal_ms(rng, 80, 300.0)
    assert bootstrap_ratio_runs([ours], [theirs, []], seed=3) == bootstrap_ratio(
        ours, theirs, seed=3
    )
    assert bootstrap_ratio_runs([[]], [theirs]) is None

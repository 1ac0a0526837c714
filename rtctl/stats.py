"""The statistics of ``rtctl report``: percentiles over pooled pods, bootstrap intervals on
ratios between runtimes, and the spread of a number across repetitions.

A report pools the pods of several runs (one runtime, variant and replica
count, repeated) and compares runtimes against a baseline. Every number here is
defined so a reader can recompute it:

- Percentiles are nearest-rank (``rtbench.percentiles``, the collector's own
  definition): pN is the smallest latency with at least N % of the pods at or
  below it, so every percentile is one pod's real latency.
- The ratio of runtime X to the baseline B for a percentile (p50 of
  first_response by default) is pN(X) / pN(B). Its confidence interval is a
  percentile bootstrap: resample the pods of X and of B, each group on its own
  and with replacement, recompute the ratio, repeat (2000 times by default),
  and take the 2.5 % and 97.5 % ratios (nearest-rank) as the 95 % interval.
  Seeded, so the same report gives the same interval.
- How a resample is drawn: resampling n pods with replacement and taking the
  k-th smallest latency (k = the nearest rank) is the same as taking the k-th
  smallest of n uniform random pod indices into the sorted latencies; and the
  k-th smallest of n uniform (0, 1) numbers follows Beta(k, n - k + 1). One
  Beta draw therefore replaces n draws and a sort, with exactly the same
  distribution (tests/rtctl/test_stats.py checks it against literal
  resampling), which keeps 2000 resamples of 10 000 pods instant.
- Pods of one run are not independent: they share the run's node state,
  image cache and API server load, and repetitions of a runtime differ by more
  than pod-to-pod noise suggests. When a group has two or more runs, its side
  of a ratio is therefore resampled in two stages (``bootstrap_ratio_runs``):
  draw the group's runs with replacement, then each drawn run's pods with
  replacement, pool them and take pN. The interval then covers run-to-run
  variation as well as pod-to-pod variation. The inner stage is literal
  resampling (the Beta shortcut gives one run's order statistic, not the pooled
  one); a group of one run keeps the one-stage Beta draw, which is the same
  thing there.
- Across repetitions (one number per run, e.g. its p50 first_response), the
  median is nearest-rank too (one run's real value), the spread its min..max.

Pure functions without I/O; invalid arguments raise ValueError (the CLI
validates flags before calling).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from rtbench.percentiles import nearest_rank

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "Distribution",
    "RatioInterval",
    "Spread",
    "bootstrap_ratio",
    "bootstrap_ratio_runs",
    "fraction_rank",
    "nearest_rank",
    "resampled_percentiles",
    "two_stage_percentiles",
]

DEFAULT_RESAMPLES = 2000
"""Enough that the 2.5 % and 97.5 % tails rest on 50 resamples each, the usual
advice for percentile intervals; more changes the interval's third digit."""

DEFAULT_CONFIDENCE = 0.95
"""The interval papers report; anything else must be asked for."""


@dataclass(frozen=True)
class Distribution:
    """Nearest-rank percentiles of a set of latencies (ns); all 0 when it is empty."""

    count: int
    min_ns: int
    p50_ns: int
    p90_ns: int
    p99_ns: int
    max_ns: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Distribution:
        ordered = sorted(values)
        if not ordered:
            return cls(0, 0, 0, 0, 0, 0)
        return cls(
            count=len(ordered),
            min_ns=ordered[0],
            p50_ns=nearest_rank(ordered, 50),
            p90_ns=nearest_rank(ordered, 90),
            p99_ns=nearest_rank(ordered, 99),
            max_ns=ordered[-1],
        )


@dataclass(frozen=True)
class RatioInterval:
    """pN(X) / pN(baseline) with its bootstrap confidence interval."""

    ratio: float
    low: float
    high: float
    percent: int
    """Which percentile is compared (50: medians)."""
    confidence: float
    resamples: int
    """Resamples whose ratio was defined (a resampled baseline of 0 has none)."""
    count: int
    baseline_count: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Spread:
    """One number per run, across the repetitions of a group."""

    count: int
    median: int
    low: int
    high: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Spread:
        ordered = sorted(values)
        if not ordered:
            return cls(0, 0, 0, 0)
        return cls(len(ordered), nearest_rank(ordered, 50), ordered[0], ordered[-1])

    @property
    def relative(self) -> float:
        """(high - low) / median: how far apart the repetitions are; 0 without a median."""
        return (self.high - self.low) / self.median if self.median else 0.0


def fraction_rank(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank quantile at ``fraction`` in [0, 1] (0.025 → the 2.5 % value)."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not in [0, 1]")
    # round() first: 0.975 * 2000 is 1950.0000000000002 in floats, and must be rank 1950.
    k = math.ceil(round(fraction * len(sorted_values), 9))
    return sorted_values[max(k, 1) - 1]


def resampled_percentiles(
    sorted_values: Sequence[int], percent: int, resamples: int, rng: random.Random
) -> list[int]:
    """The nearest-rank pN of ``resamples`` bootstrap resamples of ``sorted_values``.

    Each resample draws len(sorted_values) values with replacement; see the
    module docstring for why one Beta draw per resample gives exactly that.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("cannot resample an empty group")
    k = max(-(-percent * n // 100), 1)
    alpha, beta = float(k), float(n - k + 1)
    return [
        sorted_values[min(int(n * rng.betavariate(alpha, beta)), n - 1)] for _ in range(resamples)
    ]


def two_stage_percentiles(
    runs: Sequence[Sequence[int]], percent: int, resamples: int, rng: random.Random
) -> list[int]:
    """The nearest-rank pN of ``resamples`` two-stage bootstrap resamples of ``runs``.

    Each resample draws len(runs) runs with replacement, then each drawn run's
    own number of pods with replacement from that run, and takes pN of the pool.
    """
    kept = [list(run) for run in runs if run]
    if not kept:
        raise ValueError("cannot resample an empty group")
    indices = range(len(kept))
    out = []
    for _ in range(resamples):
        counts = [0] * len(kept)
        for index in rng.choices(indices, k=len(kept)):
            counts[index] += 1
        pool: list[int] = []
        for run, times in zip(kept, counts, strict=True):
            if times:
                # m draws of a run's n pods each are m*n draws from that run.
                pool += rng.choices(run, k=times * len(run))
        pool.sort()
        out.append(nearest_rank(pool, percent))
    return out


def bootstrap_ratio(
    values: Sequence[int],
    baseline: Sequence[int],
    *,
    percent: int = 50,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | str = 0,
) -> RatioInterval | None:
    """pN(values) / pN(baseline) with a percentile-bootstrap interval.

    None when either group is empty or the baseline's pN is not positive (a
    ratio to zero means nothing). ``seed`` may be a string, so each comparison
    of a report can have its own stream (e.g. "7:kata-qemu:first_response")
    and adding a runtime to a report leaves the other intervals unchanged.
    """
    _check(resamples, confidence, percent)
    ours, theirs = sorted(values), sorted(baseline)
    if not ours or not theirs:
        return None
    point_base = nearest_rank(theirs, percent)
    if point_base <= 0:
        return None
    rng = random.Random(seed)
    numerators = resampled_percentiles(ours, percent, resamples, rng)
    denominators = resampled_percentiles(theirs, percent, resamples, rng)
    return _interval(ours, theirs, numerators, denominators, percent, confidence)


def bootstrap_ratio_runs(
    runs: Sequence[Sequence[int]],
    baseline_runs: Sequence[Sequence[int]],
    *,
    percent: int = 50,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | str = 0,
) -> RatioInterval | None:
    """Like ``bootstrap_ratio`` over the pooled pods, but each side given run by run.

    A side with two or more runs (that have pods) is resampled in two stages,
    runs then pods (see the module docstring); a side with one run is the
    one-stage bootstrap of its pods. The point ratio is the same as the pooled one.
    """
    _check(resamples, confidence, percent)
    ours = sorted(v for run in runs for v in run)
    theirs = sorted(v for run in baseline_runs for v in run)
    if not ours or not theirs or nearest_rank(theirs, percent) <= 0:
        return None
    rng = random.Random(seed)
    numerators = _side(runs, ours, percent, resamples, rng)
    denominators = _side(baseline_runs, theirs, percent, resamples, rng)
    return _interval(ours, theirs, numerators, denominators, percent, confidence)


def _side(
    runs: Sequence[Sequence[int]],
    pooled: Sequence[int],
    percent: int,
    resamples: int,
    rng: random.Random,
) -> list[int]:
    if sum(1 for run in runs if run) >= 2:
        return two_stage_percentiles(runs, percent, resamples, rng)
    return resampled_percentiles(pooled, percent, resamples, rng)


def _check(resamples: int, confidence: float, percent: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in 1..100, not {percent}")


def _interval(
    ours: Sequence[int],
    theirs: Sequence[int],
    numerators: Sequence[int],
    denominators: Sequence[int],
    percent: int,
    confidence: float,
) -> RatioInterval | None:
    point_base = nearest_rank(theirs, percent)
    ratios = sorted(a / b for a, b in zip(numerators, denominators, strict=True) if b > 0)
    if not ratios:
        return None
    tail = (1.0 - confidence) / 2.0
    return RatioInterval(
        ratio=nearest_rank(ours, percent) / point_base,
        low=fraction_rank(ratios, tail),
        high=fraction_rank(ratios, 1.0 - tail),
        percent=percent,
        confidence=confidence,
        resamples=len(ratios),
        count=len(ours),
        baseline_count=len(theirs),
    )

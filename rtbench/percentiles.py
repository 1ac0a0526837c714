"""Nearest-rank percentiles: the one definition the collector and rtctl share.

The collector's run summaries and rtctl's reports (which pool the pods of
several runs) must give the same number for the same pods, or a reader who
recomputes one from the other finds a discrepancy that is only a definition.
So the definition lives here, once: pN is the smallest value with at least N %
of the values at or below it (p50 of 10 values is the 5th, p99 the 10th). No
interpolation: every percentile reported is one pod's real latency.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["nearest_rank"]


def nearest_rank(sorted_values: Sequence[int], percent: int) -> int:
    """The smallest value with at least ``percent`` % of the values at or below it.

    ``sorted_values`` must be sorted ascending; 0 when it is empty.
    """
    if not sorted_values:
        return 0
    k = -(-percent * len(sorted_values) // 100)  # ceil without floats
    return sorted_values[max(k, 1) - 1]

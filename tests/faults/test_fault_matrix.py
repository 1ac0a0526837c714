"""The end-to-end fault matrix (issue 8): each fault of the table, mid-run, on the whole
stack as processes with the real InfluxDB; ``tests.faults.scenarios`` holds the scenarios
(bench/fault_matrix.py prints the same as a table)."""

from __future__ import annotations

import json

import pytest

from tests.faults.harness import FaultStack
from tests.faults.scenarios import SCENARIOS, Scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_fault(scenario: Scenario, fault_stack: FaultStack) -> None:
    verdict = scenario(fault_stack)
    detail = json.dumps(verdict.numbers, default=str)
    print(f"{verdict.name}: {verdict.observed} ({verdict.seconds} s) {detail}")
    assert verdict.passed, (
        f"{verdict.fault}: expected {verdict.expected}; got {verdict.observed}; {detail}"
    )

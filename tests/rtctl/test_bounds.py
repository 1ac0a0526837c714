"""``--max-uncertainty PHASE=DURATION``: what it means, and what a bad value gets.

The flag's values become changes to the collector's default bounds (sent in
the summary request); a bad value is refused by every command that takes it
before anything is contacted: exit 2 and one line naming the flag and the value.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rtbench.protocol import DEFAULT_MAX_UNCERTAINTY_NS
from rtbench.v1 import events_pb2
from rtctl.bounds import NO_CHANGES, bounds_text, format_bound, parse_bounds
from rtctl.errors import UsageError

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
MS = 1_000_000
P = events_pb2


def test_values_change_the_defaults_later_ones_winning() -> None:
    assert (
        NO_CHANGES.effective
        == dict(DEFAULT_MAX_UNCERTAINTY_NS)
        == {P.PHASE_FIRST_RESPONSE: 10 * MS}
    )
    bounds = parse_bounds(["first_response=2.5ms", "READY = 1s", "running=0", "ready=250ms"])
    assert bounds.effective == {
        P.PHASE_RUNNING: 0,
        P.PHASE_FIRST_RESPONSE: 2_500_000,
        P.PHASE_READY: 250 * MS,
    }
    assert [(b.phase, b.max_uncertainty_ns) for b in bounds.request()] == [
        (P.PHASE_FIRST_RESPONSE, 2_500_000),
        (P.PHASE_READY, 250 * MS),
        (P.PHASE_RUNNING, 0),
    ]
    lifted = parse_bounds(["first_response=none", "scheduled=off"])
    assert lifted.effective == {}
    assert [(b.phase, b.max_uncertainty_ns) for b in lifted.request()] == [
        (P.PHASE_FIRST_RESPONSE, -1),
        (P.PHASE_SCHEDULED, -1),
    ]
    assert bounds_text({}) == "no phase bounded"
    assert (
        bounds_text({"first_response": 10 * MS, "ready": 2 * 10**9})
        == "first_response ≤ 10 ms; ready ≤ 2 s; other phases unbounded"
    )
    assert format_bound(500_000) == "0.5 ms"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("first_response", "must be PHASE=DURATION or PHASE=none, got 'first_response'"),
        ("=5ms", "must be PHASE=DURATION or PHASE=none, got '=5ms'"),
        ("first_response=soon", "'soon' is not a duration"),
        ("first_response=-1ms", "'-1ms' is not a duration"),
        ("first_response=1e-3", "'1e-3' is not a duration"),
        ("first_response=9d", "'9d' is not a duration"),
        ("created=1ms", "unknown phase 'created'; phases: scheduled, sandbox_created"),
        ("gone=1ms", "unknown phase 'gone'"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_value(value: str, says: str) -> None:
    with pytest.raises(UsageError, match="--max-uncertainty") as raised:
        parse_bounds(["ready=1ms", value])
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "command",
    [
        ["report"],
        ["start-run", "--runtime-class", "runc"],
        ["run-plan", str(REPO / "examples" / "plan.yaml"), "--dry-run"],
    ],
)
def test_every_command_refuses_a_bad_bound_with_exit_2_and_one_line(command: list[str]) -> None:
    # No collector or cluster is configured: the value is refused before either is needed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTBENCH_RTCTL_")}
    env["KUBECONFIG"] = "/nonexistent"
    done = subprocess.run(
        [str(BIN / "rtctl"), *command, "--max-uncertainty", "first_response=fast"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "rtctl: --max-uncertainty 'first_response=fast': 'fast' is not a duration"
        " (e.g. 300, 90s, 250ms, 5m, 1h)"
    ]

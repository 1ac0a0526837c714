"""The end-to-end fault matrix of issue 8 as a table: fault | expected | observed | PASS/FAIL | s.

Run: ``.venv/bin/python bench/fault_matrix.py [--only NAME ...]`` (about 4 minutes;
needs root for the journal's tmpfs, as CI has). It runs the same scenarios as
tests/faults (``tests.faults.scenarios``) on one ``FaultStack`` (simulated
cluster with 2 nodes, collector, 2 agents through a link proxy, a private
InfluxDB), replaced when a scenario left it broken. Each scenario starts a run
of 16 pods, injects its fault after some pods are ready, lets the system
recover and checks what came out (complete timelines, duplicates, batches
missing from the journal, points missing from InfluxDB, leftovers).

Not a speed benchmark: the figure of merit is PASS, and the seconds say what
each fault costs in wall time (most of it is the fault's own duration: 5 s,
30 s, 20 s). The baseline measured in the same run is ``baseline``: the same
run with no fault, so each scenario's time reads against it (a ratio).
Writes bench/results/fault_matrix.json and prints one summary line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the scenarios live with the tests

from tests.faults.harness import Driver, FaultStack  # noqa: E402
from tests.faults.scenarios import SCENARIOS, Scenario, Verdict, _complete  # noqa: E402

RESULTS = REPO / "bench" / "results" / "fault_matrix.json"


def _baseline_run(fs: FaultStack, v: Verdict) -> None:
    d = Driver(fs, f"f-baseline-{int(time.time())}")
    d.start()
    d.wait_complete()
    v.passed = _complete(fs, d, d.finish(), v)
    v.observed = "no fault"


BASELINE = Scenario("baseline", "none", "every pod complete", _baseline_run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=[s.name for s in SCENARIOS], help="run only these"
    )
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    workload = REPO / "workload" / "build" / "server"
    subprocess.run(["make", "-s", "-C", str(REPO / "workload")], check=True)
    verdicts: list[Verdict] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rtbench-faults-") as tmp:
        fs: FaultStack | None = None
        made = 0
        try:
            for scenario in [BASELINE, *chosen]:
                if fs is not None and not fs.healthy():
                    fs.stop(strict=False)
                    fs = None
                if fs is None:
                    made += 1
                    fs = FaultStack(Path(tmp) / f"stack{made}", workload).start()
                verdict = scenario(fs)
                fs.sim("/_sim/faults", "DELETE")
                verdicts.append(verdict)
                mark = "PASS" if verdict.passed else "FAIL"
                print(f"  {verdict.name}: {mark} in {verdict.seconds} s", file=sys.stderr)
        finally:
            if fs is not None:
                fs.stop(strict=False)
    total = time.monotonic() - started
    base = verdicts[0].seconds or 1.0
    rows = [
        ("fault", "expected", "observed", "result", "s", "x baseline"),
        *(
            (v.fault, v.expected, v.observed, "PASS" if v.passed else "FAIL",
             f"{v.seconds:.1f}", f"{v.seconds / base:.1f}")
            for v in verdicts
        ),
    ]  # fmt: skip
    for row in rows:
        print(" | ".join(row))
    passed = sum(v.passed for v in verdicts[1:])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "python bench/fault_matrix.py"
                + "".join(f" --only {n}" for n in args.only or []),
                "stacks_started": made,
                "total_s": round(total, 1),
                "baseline_s": base,
                "scenarios": [v.__dict__ for v in verdicts],
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    print(
        f"fault_matrix: {passed}/{len(verdicts) - 1} faults PASS in {total:.0f} s "
        f"(baseline run {base:.1f} s, {made} stack(s)); {RESULTS.relative_to(REPO)}"
    )
    return 0 if passed == len(verdicts) - 1 and verdicts[0].passed else 1


if __name__ == "__main__":
    sys.exit(main())

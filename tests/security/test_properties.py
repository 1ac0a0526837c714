"""Property-based tests (hypothesis) on the code that decodes and validates input.

Fixed seed and modest example counts, so CI runs the same examples every time:
- any bytes decoded as an AgentMessage either fail to decode or, as a batch,
  pass ``validate_batch`` or fail it with InvalidBatch only;
- any YAML-ish tree dumped as a plan is accepted or refused with PlanInvalid;
- durations and the shared number parsers accept or raise ValueError only, and
  an accepted duration is finite, non-negative and at most a week.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from google.protobuf.message import DecodeError
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from collector.errors import InvalidBatch
from collector.ingest import validate_batch
from rtbench.cli import parse_float, parse_int
from rtbench.clock import wall_ns
from rtbench.v1 import agent_pb2, events_pb2
from rtctl.cliargs import parse_duration
from rtctl.plan import PlanInvalid, parse_plan

CI = settings(max_examples=200, deadline=None, derandomize=True)

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12) | st.sampled_from(_KEYS := [
        "runtimes", "replicas", "repetitions", "timeout", "settle", "labels", "variants",
        "memory", "image", "test_id", "seed", "namespace", "baseline", "plan",
    ]), children, max_size=5),
    max_leaves=20,
)  # fmt: skip


@seed(8)
@CI
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_validate_cleanly(raw: bytes) -> None:
    try:
        msg = agent_pb2.AgentMessage.FromString(raw)
    except DecodeError:
        return
    if msg.WhichOneof("body") == "batch":
        try:
            validate_batch(msg.batch, max_records=1000, now_ns=wall_ns())
        except InvalidBatch:
            pass


events = st.builds(
    events_pb2.Event,
    phase=st.integers(-(2**31), 2**31 - 1),
    source=st.integers(-(2**31), 2**31 - 1),
    time_ns=st.integers(-(2**63), 2**63 - 1),
    uncertainty_ns=st.integers(-(2**63), 2**63 - 1),
    pod=st.builds(events_pb2.PodRef, uid=st.text(max_size=4)),
)


@seed(8)
@CI
@given(
    st.integers(0, 2**64 - 1),
    st.lists(events, max_size=5),
    st.integers(-(2**63), 2**63 - 1),
)
def test_validate_batch_accepts_only_placeable_times(
    sequence: int, evs: list[events_pb2.Event], offset: int
) -> None:
    batch = agent_pb2.Batch(sequence=sequence, events=evs)
    batch.clock.offset_ns = offset
    now = wall_ns()
    try:
        validate_batch(batch, max_records=1000, now_ns=now)
    except InvalidBatch:
        return
    for ev in batch.events:
        assert ev.pod.uid and ev.phase != 0 and ev.uncertainty_ns >= 0
        assert 978_307_200 * 10**9 <= ev.time_ns + offset <= now + 86_400 * 10**9


@seed(8)
@CI
@given(trees)
def test_any_tree_is_a_plan_or_plan_invalid(tree: Any) -> None:
    text = yaml.safe_dump(tree, allow_unicode=True)
    try:
        parse_plan(text, "plan.yaml")
    except PlanInvalid:
        pass


@seed(8)
@CI
@given(st.text(max_size=30))
def test_parsers_raise_value_error_only(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        assert math.isfinite(seconds) and 0 <= seconds <= 7 * 24 * 3600
    for parse in (parse_int, parse_float):
        try:
            parse(text)
        except ValueError:
            pass

from rtbench.v1 import agent_pb2 as _agent_pb2
from rtbench.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuntimeMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNTIME_MODE_UNSPECIFIED: _ClassVar[RuntimeMode]
    RUNTIME_MODE_REAL: _ClassVar[RuntimeMode]
    RUNTIME_MODE_SIMULATED: _ClassVar[RuntimeMode]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_REGISTERED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_TIMED_OUT: _ClassVar[RunState]
    RUN_STATE_ABORTED: _ClassVar[RunState]
RUNTIME_MODE_UNSPECIFIED: RuntimeMode
RUNTIME_MODE_REAL: RuntimeMode
RUNTIME_MODE_SIMULATED: RuntimeMode
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_REGISTERED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_TIMED_OUT: RunState
RUN_STATE_ABORTED: RunState

class RunSpec(_message.Message):
    __slots__ = ("run_id", "test_id", "runtime_class", "variant", "replicas", "image", "memory_limit", "repetition", "namespace", "plan_id", "environment", "runtime_mode", "runtime_mode_basis")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_CLASS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REPETITION_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_MODE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_MODE_BASIS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    test_id: str
    runtime_class: str
    variant: str
    replicas: int
    image: str
    memory_limit: str
    repetition: int
    namespace: str
    plan_id: str
    environment: _containers.ScalarMap[str, str]
    runtime_mode: RuntimeMode
    runtime_mode_basis: str
    def __init__(self, run_id: _Optional[str] = ..., test_id: _Optional[str] = ..., runtime_class: _Optional[str] = ..., variant: _Optional[str] = ..., replicas: _Optional[int] = ..., image: _Optional[str] = ..., memory_limit: _Optional[str] = ..., repetition: _Optional[int] = ..., namespace: _Optional[str] = ..., plan_id: _Optional[str] = ..., environment: _Optional[_Mapping[str, str]] = ..., runtime_mode: _Optional[_Union[RuntimeMode, str]] = ..., runtime_mode_basis: _Optional[str] = ...) -> None: ...

class RegisterRunRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ...) -> None: ...

class RegisterRunResponse(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RecordCreateRequest(_message.Message):
    __slots__ = ("run_id", "request_sent_ns", "response_received_ns", "rtctl_clock")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SENT_NS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_RECEIVED_NS_FIELD_NUMBER: _ClassVar[int]
    RTCTL_CLOCK_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    request_sent_ns: int
    response_received_ns: int
    rtctl_clock: _events_pb2.ClockOffset
    def __init__(self, run_id: _Optional[str] = ..., request_sent_ns: _Optional[int] = ..., response_received_ns: _Optional[int] = ..., rtctl_clock: _Optional[_Union[_events_pb2.ClockOffset, _Mapping]] = ...) -> None: ...

class RecordCreateResponse(_message.Message):
    __slots__ = ("created_ns",)
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    created_ns: int
    def __init__(self, created_ns: _Optional[int] = ...) -> None: ...

class FinishRunRequest(_message.Message):
    __slots__ = ("run_id", "state", "message")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    message: str
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class FinishRunResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchProgressRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class PhaseCount(_message.Message):
    __slots__ = ("phase", "count")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    phase: _events_pb2.Phase
    count: int
    def __init__(self, phase: _Optional[_Union[_events_pb2.Phase, str]] = ..., count: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("run_id", "replicas", "counts", "state", "time_ns")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    replicas: int
    counts: _containers.RepeatedCompositeFieldContainer[PhaseCount]
    state: RunState
    time_ns: int
    def __init__(self, run_id: _Optional[str] = ..., replicas: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[PhaseCount, _Mapping]]] = ..., state: _Optional[_Union[RunState, str]] = ..., time_ns: _Optional[int] = ...) -> None: ...

class UncertaintyBound(_message.Message):
    __slots__ = ("phase", "max_uncertainty_ns")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MAX_UNCERTAINTY_NS_FIELD_NUMBER: _ClassVar[int]
    phase: _events_pb2.Phase
    max_uncertainty_ns: int
    def __init__(self, phase: _Optional[_Union[_events_pb2.Phase, str]] = ..., max_uncertainty_ns: _Optional[int] = ...) -> None: ...

class GetRunSummaryRequest(_message.Message):
    __slots__ = ("run_id", "include_pods", "max_uncertainty")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PODS_FIELD_NUMBER: _ClassVar[int]
    MAX_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    include_pods: bool
    max_uncertainty: _containers.RepeatedCompositeFieldContainer[UncertaintyBound]
    def __init__(self, run_id: _Optional[str] = ..., include_pods: _Optional[bool] = ..., max_uncertainty: _Optional[_Iterable[_Union[UncertaintyBound, _Mapping]]] = ...) -> None: ...

class PhaseStats(_message.Message):
    __slots__ = ("phase", "count", "min_ns", "p50_ns", "p90_ns", "p99_ns", "max_ns", "max_uncertainty_ns", "p50_uncertainty_ns", "reached", "out_of_order", "over_bound")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_NS_FIELD_NUMBER: _ClassVar[int]
    P50_NS_FIELD_NUMBER: _ClassVar[int]
    P90_NS_FIELD_NUMBER: _ClassVar[int]
    P99_NS_FIELD_NUMBER: _ClassVar[int]
    MAX_NS_FIELD_NUMBER: _ClassVar[int]
    MAX_UNCERTAINTY_NS_FIELD_NUMBER: _ClassVar[int]
    P50_UNCERTAINTY_NS_FIELD_NUMBER: _ClassVar[int]
    REACHED_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_ORDER_FIELD_NUMBER: _ClassVar[int]
    OVER_BOUND_FIELD_NUMBER: _ClassVar[int]
    phase: _events_pb2.Phase
    count: int
    min_ns: int
    p50_ns: int
    p90_ns: int
    p99_ns: int
    max_ns: int
    max_uncertainty_ns: int
    p50_uncertainty_ns: int
    reached: int
    out_of_order: int
    over_bound: int
    def __init__(self, phase: _Optional[_Union[_events_pb2.Phase, str]] = ..., count: _Optional[int] = ..., min_ns: _Optional[int] = ..., p50_ns: _Optional[int] = ..., p90_ns: _Optional[int] = ..., p99_ns: _Optional[int] = ..., max_ns: _Optional[int] = ..., max_uncertainty_ns: _Optional[int] = ..., p50_uncertainty_ns: _Optional[int] = ..., reached: _Optional[int] = ..., out_of_order: _Optional[int] = ..., over_bound: _Optional[int] = ...) -> None: ...

class FailureCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    count: int
    def __init__(self, reason: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class PhaseTime(_message.Message):
    __slots__ = ("phase", "source", "time_ns", "latency_ns", "uncertainty_ns", "over_bound", "out_of_order")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_NS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_NS_FIELD_NUMBER: _ClassVar[int]
    OVER_BOUND_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_ORDER_FIELD_NUMBER: _ClassVar[int]
    phase: _events_pb2.Phase
    source: _events_pb2.Source
    time_ns: int
    latency_ns: int
    uncertainty_ns: int
    over_bound: bool
    out_of_order: bool
    def __init__(self, phase: _Optional[_Union[_events_pb2.Phase, str]] = ..., source: _Optional[_Union[_events_pb2.Source, str]] = ..., time_ns: _Optional[int] = ..., latency_ns: _Optional[int] = ..., uncertainty_ns: _Optional[int] = ..., over_bound: _Optional[bool] = ..., out_of_order: _Optional[bool] = ...) -> None: ...

class OrderViolation(_message.Message):
    __slots__ = ("ordinal", "pod_name", "pod_uid", "phase", "must_follow", "early_by_ns", "beyond_uncertainty_ns")
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MUST_FOLLOW_FIELD_NUMBER: _ClassVar[int]
    EARLY_BY_NS_FIELD_NUMBER: _ClassVar[int]
    BEYOND_UNCERTAINTY_NS_FIELD_NUMBER: _ClassVar[int]
    ordinal: int
    pod_name: str
    pod_uid: str
    phase: _events_pb2.Phase
    must_follow: _events_pb2.Phase
    early_by_ns: int
    beyond_uncertainty_ns: int
    def __init__(self, ordinal: _Optional[int] = ..., pod_name: _Optional[str] = ..., pod_uid: _Optional[str] = ..., phase: _Optional[_Union[_events_pb2.Phase, str]] = ..., must_follow: _Optional[_Union[_events_pb2.Phase, str]] = ..., early_by_ns: _Optional[int] = ..., beyond_uncertainty_ns: _Optional[int] = ...) -> None: ...

class PodTimeline(_message.Message):
    __slots__ = ("ordinal", "pod", "phases")
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ordinal: int
    pod: _events_pb2.PodRef
    phases: _containers.RepeatedCompositeFieldContainer[PhaseTime]
    def __init__(self, ordinal: _Optional[int] = ..., pod: _Optional[_Union[_events_pb2.PodRef, _Mapping]] = ..., phases: _Optional[_Iterable[_Union[PhaseTime, _Mapping]]] = ...) -> None: ...

class AgentClock(_message.Message):
    __slots__ = ("agent_id", "node", "clock")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    node: str
    clock: _events_pb2.ClockOffset
    def __init__(self, agent_id: _Optional[str] = ..., node: _Optional[str] = ..., clock: _Optional[_Union[_events_pb2.ClockOffset, _Mapping]] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("spec", "state", "created_ns", "finished_ns", "phases", "all_responded_ns", "failures", "memory_per_pod_bytes", "clocks", "rtctl_clock", "pods", "message", "failed_pods", "max_uncertainty", "bounds_applied", "out_of_order")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_NS_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ALL_RESPONDED_NS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PER_POD_BYTES_FIELD_NUMBER: _ClassVar[int]
    CLOCKS_FIELD_NUMBER: _ClassVar[int]
    RTCTL_CLOCK_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILED_PODS_FIELD_NUMBER: _ClassVar[int]
    MAX_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_APPLIED_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_ORDER_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    state: RunState
    created_ns: int
    finished_ns: int
    phases: _containers.RepeatedCompositeFieldContainer[PhaseStats]
    all_responded_ns: int
    failures: _containers.RepeatedCompositeFieldContainer[FailureCount]
    memory_per_pod_bytes: float
    clocks: _containers.RepeatedCompositeFieldContainer[AgentClock]
    rtctl_clock: _events_pb2.ClockOffset
    pods: _containers.RepeatedCompositeFieldContainer[PodTimeline]
    message: str
    failed_pods: int
    max_uncertainty: _containers.RepeatedCompositeFieldContainer[UncertaintyBound]
    bounds_applied: bool
    out_of_order: _containers.RepeatedCompositeFieldContainer[OrderViolation]
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., state: _Optional[_Union[RunState, str]] = ..., created_ns: _Optional[int] = ..., finished_ns: _Optional[int] = ..., phases: _Optional[_Iterable[_Union[PhaseStats, _Mapping]]] = ..., all_responded_ns: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[FailureCount, _Mapping]]] = ..., memory_per_pod_bytes: _Optional[float] = ..., clocks: _Optional[_Iterable[_Union[AgentClock, _Mapping]]] = ..., rtctl_clock: _Optional[_Union[_events_pb2.ClockOffset, _Mapping]] = ..., pods: _Optional[_Iterable[_Union[PodTimeline, _Mapping]]] = ..., message: _Optional[str] = ..., failed_pods: _Optional[int] = ..., max_uncertainty: _Optional[_Iterable[_Union[UncertaintyBound, _Mapping]]] = ..., bounds_applied: _Optional[bool] = ..., out_of_order: _Optional[_Iterable[_Union[OrderViolation, _Mapping]]] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("spec", "state", "created_ns", "finished_ns")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_NS_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    state: RunState
    created_ns: int
    finished_ns: int
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., state: _Optional[_Union[RunState, str]] = ..., created_ns: _Optional[int] = ..., finished_ns: _Optional[int] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("test_id", "plan_id")
    TEST_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    test_id: str
    plan_id: str
    def __init__(self, test_id: _Optional[str] = ..., plan_id: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "node", "agent_version", "node_facts", "clock", "connected", "last_seen_ns", "committed_sequence", "last_heard_ns", "silence_bound_ns", "stale")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_FACTS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_NS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_NS_FIELD_NUMBER: _ClassVar[int]
    SILENCE_BOUND_NS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    node: str
    agent_version: str
    node_facts: _agent_pb2.NodeFacts
    clock: _events_pb2.ClockOffset
    connected: bool
    last_seen_ns: int
    committed_sequence: int
    last_heard_ns: int
    silence_bound_ns: int
    stale: bool
    def __init__(self, agent_id: _Optional[str] = ..., node: _Optional[str] = ..., agent_version: _Optional[str] = ..., node_facts: _Optional[_Union[_agent_pb2.NodeFacts, _Mapping]] = ..., clock: _Optional[_Union[_events_pb2.ClockOffset, _Mapping]] = ..., connected: _Optional[bool] = ..., last_seen_ns: _Optional[int] = ..., committed_sequence: _Optional[int] = ..., last_heard_ns: _Optional[int] = ..., silence_bound_ns: _Optional[int] = ..., stale: _Optional[bool] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

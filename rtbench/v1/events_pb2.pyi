from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_CREATED: _ClassVar[Phase]
    PHASE_SCHEDULED: _ClassVar[Phase]
    PHASE_SANDBOX_CREATED: _ClassVar[Phase]
    PHASE_SANDBOX_STARTED: _ClassVar[Phase]
    PHASE_CONTAINER_CREATED: _ClassVar[Phase]
    PHASE_CONTAINER_STARTED: _ClassVar[Phase]
    PHASE_RUNNING: _ClassVar[Phase]
    PHASE_FIRST_RESPONSE: _ClassVar[Phase]
    PHASE_READY: _ClassVar[Phase]
    PHASE_DELETION_REQUESTED: _ClassVar[Phase]
    PHASE_GONE: _ClassVar[Phase]
    PHASE_FAILED: _ClassVar[Phase]
    PHASE_CONTAINER_EXITED: _ClassVar[Phase]
    PHASE_UNAVAILABLE: _ClassVar[Phase]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_WATCH: _ClassVar[Source]
    SOURCE_PROBE: _ClassVar[Source]
    SOURCE_CONTAINERD: _ClassVar[Source]
    SOURCE_RTCTL: _ClassVar[Source]
    SOURCE_SIMULATOR: _ClassVar[Source]
PHASE_UNSPECIFIED: Phase
PHASE_CREATED: Phase
PHASE_SCHEDULED: Phase
PHASE_SANDBOX_CREATED: Phase
PHASE_SANDBOX_STARTED: Phase
PHASE_CONTAINER_CREATED: Phase
PHASE_CONTAINER_STARTED: Phase
PHASE_RUNNING: Phase
PHASE_FIRST_RESPONSE: Phase
PHASE_READY: Phase
PHASE_DELETION_REQUESTED: Phase
PHASE_GONE: Phase
PHASE_FAILED: Phase
PHASE_CONTAINER_EXITED: Phase
PHASE_UNAVAILABLE: Phase
SOURCE_UNSPECIFIED: Source
SOURCE_WATCH: Source
SOURCE_PROBE: Source
SOURCE_CONTAINERD: Source
SOURCE_RTCTL: Source
SOURCE_SIMULATOR: Source

class PodRef(_message.Message):
    __slots__ = ("uid", "namespace", "name", "node", "run_id", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    UID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    uid: str
    namespace: str
    name: str
    node: str
    run_id: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, uid: _Optional[str] = ..., namespace: _Optional[str] = ..., name: _Optional[str] = ..., node: _Optional[str] = ..., run_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("pod", "phase", "source", "time_ns", "monotonic_ns", "uncertainty_ns", "api_time_ns", "reason", "container", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    POD_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    MONOTONIC_NS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_NS_FIELD_NUMBER: _ClassVar[int]
    API_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    pod: PodRef
    phase: Phase
    source: Source
    time_ns: int
    monotonic_ns: int
    uncertainty_ns: int
    api_time_ns: int
    reason: str
    container: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, pod: _Optional[_Union[PodRef, _Mapping]] = ..., phase: _Optional[_Union[Phase, str]] = ..., source: _Optional[_Union[Source, str]] = ..., time_ns: _Optional[int] = ..., monotonic_ns: _Optional[int] = ..., uncertainty_ns: _Optional[int] = ..., api_time_ns: _Optional[int] = ..., reason: _Optional[str] = ..., container: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ResourceSample(_message.Message):
    __slots__ = ("time_ns", "pod", "mem_total_bytes", "mem_available_bytes", "cpu_busy", "pod_memory_bytes")
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    MEM_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEM_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_BUSY_FIELD_NUMBER: _ClassVar[int]
    POD_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    time_ns: int
    pod: PodRef
    mem_total_bytes: int
    mem_available_bytes: int
    cpu_busy: float
    pod_memory_bytes: int
    def __init__(self, time_ns: _Optional[int] = ..., pod: _Optional[_Union[PodRef, _Mapping]] = ..., mem_total_bytes: _Optional[int] = ..., mem_available_bytes: _Optional[int] = ..., cpu_busy: _Optional[float] = ..., pod_memory_bytes: _Optional[int] = ...) -> None: ...

class ProbeResult(_message.Message):
    __slots__ = ("pod", "time_ns", "ok", "latency_ns", "status_code", "error")
    POD_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    LATENCY_NS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    pod: PodRef
    time_ns: int
    ok: bool
    latency_ns: int
    status_code: int
    error: str
    def __init__(self, pod: _Optional[_Union[PodRef, _Mapping]] = ..., time_ns: _Optional[int] = ..., ok: _Optional[bool] = ..., latency_ns: _Optional[int] = ..., status_code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ClockOffset(_message.Message):
    __slots__ = ("offset_ns", "uncertainty_ns", "measured_at_ns", "samples")
    OFFSET_NS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_NS_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    offset_ns: int
    uncertainty_ns: int
    measured_at_ns: int
    samples: int
    def __init__(self, offset_ns: _Optional[int] = ..., uncertainty_ns: _Optional[int] = ..., measured_at_ns: _Optional[int] = ..., samples: _Optional[int] = ...) -> None: ...

class ClockSyncRequest(_message.Message):
    __slots__ = ("id", "t1_ns")
    ID_FIELD_NUMBER: _ClassVar[int]
    T1_NS_FIELD_NUMBER: _ClassVar[int]
    id: int
    t1_ns: int
    def __init__(self, id: _Optional[int] = ..., t1_ns: _Optional[int] = ...) -> None: ...

class ClockSyncReply(_message.Message):
    __slots__ = ("id", "t1_ns", "t2_ns", "t3_ns")
    ID_FIELD_NUMBER: _ClassVar[int]
    T1_NS_FIELD_NUMBER: _ClassVar[int]
    T2_NS_FIELD_NUMBER: _ClassVar[int]
    T3_NS_FIELD_NUMBER: _ClassVar[int]
    id: int
    t1_ns: int
    t2_ns: int
    t3_ns: int
    def __init__(self, id: _Optional[int] = ..., t1_ns: _Optional[int] = ..., t2_ns: _Optional[int] = ..., t3_ns: _Optional[int] = ...) -> None: ...

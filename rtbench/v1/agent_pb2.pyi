from rtbench.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeFacts(_message.Message):
    __slots__ = ("kernel_version", "os_image", "container_runtime_version", "kubelet_version", "architecture", "cpu_count", "memory_total_bytes", "allocatable_pods")
    KERNEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OS_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    KUBELET_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALLOCATABLE_PODS_FIELD_NUMBER: _ClassVar[int]
    kernel_version: str
    os_image: str
    container_runtime_version: str
    kubelet_version: str
    architecture: str
    cpu_count: int
    memory_total_bytes: int
    allocatable_pods: int
    def __init__(self, kernel_version: _Optional[str] = ..., os_image: _Optional[str] = ..., container_runtime_version: _Optional[str] = ..., kubelet_version: _Optional[str] = ..., architecture: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., allocatable_pods: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_id", "node", "agent_version", "protocol", "node_facts", "clock_sync_interval_ms")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NODE_FACTS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SYNC_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    node: str
    agent_version: str
    protocol: str
    node_facts: NodeFacts
    clock_sync_interval_ms: int
    def __init__(self, agent_id: _Optional[str] = ..., node: _Optional[str] = ..., agent_version: _Optional[str] = ..., protocol: _Optional[str] = ..., node_facts: _Optional[_Union[NodeFacts, _Mapping]] = ..., clock_sync_interval_ms: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("sequence", "events", "samples", "probes", "clock", "sealed_ns")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    SEALED_NS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    samples: _containers.RepeatedCompositeFieldContainer[_events_pb2.ResourceSample]
    probes: _containers.RepeatedCompositeFieldContainer[_events_pb2.ProbeResult]
    clock: _events_pb2.ClockOffset
    sealed_ns: int
    def __init__(self, sequence: _Optional[int] = ..., events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ..., samples: _Optional[_Iterable[_Union[_events_pb2.ResourceSample, _Mapping]]] = ..., probes: _Optional[_Iterable[_Union[_events_pb2.ProbeResult, _Mapping]]] = ..., clock: _Optional[_Union[_events_pb2.ClockOffset, _Mapping]] = ..., sealed_ns: _Optional[int] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("hello", "batch", "clock_sync")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SYNC_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: Batch
    clock_sync: _events_pb2.ClockSyncRequest
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ..., clock_sync: _Optional[_Union[_events_pb2.ClockSyncRequest, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("collector_id", "committed_sequence", "collector_time_ns")
    COLLECTOR_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COLLECTOR_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    collector_id: str
    committed_sequence: int
    collector_time_ns: int
    def __init__(self, collector_id: _Optional[str] = ..., committed_sequence: _Optional[int] = ..., collector_time_ns: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("sequence", "duplicate")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    duplicate: bool
    def __init__(self, sequence: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class CollectorMessage(_message.Message):
    __slots__ = ("welcome", "ack", "clock_sync")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SYNC_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: Ack
    clock_sync: _events_pb2.ClockSyncReply
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., clock_sync: _Optional[_Union[_events_pb2.ClockSyncReply, _Mapping]] = ...) -> None: ...

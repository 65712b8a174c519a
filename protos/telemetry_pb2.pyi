from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_STATE_UNSPECIFIED: _ClassVar[HostState]
    HOST_STATE_HEALTHY: _ClassVar[HostState]
    HOST_STATE_DEGRADED: _ClassVar[HostState]
    HOST_STATE_OFFLINE: _ClassVar[HostState]
HOST_STATE_UNSPECIFIED: HostState
HOST_STATE_HEALTHY: HostState
HOST_STATE_DEGRADED: HostState
HOST_STATE_OFFLINE: HostState

class DiskUsage(_message.Message):
    __slots__ = ("mount", "used_bytes", "total_bytes", "high_water", "over_high_water")
    MOUNT_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    OVER_HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    mount: str
    used_bytes: int
    total_bytes: int
    high_water: float
    over_high_water: bool
    def __init__(self, mount: _Optional[str] = ..., used_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., high_water: _Optional[float] = ..., over_high_water: _Optional[bool] = ...) -> None: ...

class TemperatureReading(_message.Message):
    __slots__ = ("sensor", "celsius")
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    CELSIUS_FIELD_NUMBER: _ClassVar[int]
    sensor: str
    celsius: float
    def __init__(self, sensor: _Optional[str] = ..., celsius: _Optional[float] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("name", "site_id", "host", "pid", "status", "queues", "current_job", "since", "supervised", "restarts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    SUPERVISED_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    site_id: str
    host: str
    pid: int
    status: str
    queues: _containers.RepeatedScalarFieldContainer[str]
    current_job: str
    since: float
    supervised: bool
    restarts: int
    def __init__(self, name: _Optional[str] = ..., site_id: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., status: _Optional[str] = ..., queues: _Optional[_Iterable[str]] = ..., current_job: _Optional[str] = ..., since: _Optional[float] = ..., supervised: _Optional[bool] = ..., restarts: _Optional[int] = ...) -> None: ...

class QueueStats(_message.Message):
    __slots__ = ("name", "site_id", "paused", "depth", "in_flight", "delayed", "dead", "throughput_per_hour", "drain_eta_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    DRAIN_ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    site_id: str
    paused: bool
    depth: int
    in_flight: int
    delayed: int
    dead: int
    throughput_per_hour: float
    drain_eta_seconds: float
    def __init__(self, name: _Optional[str] = ..., site_id: _Optional[str] = ..., paused: _Optional[bool] = ..., depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., delayed: _Optional[int] = ..., dead: _Optional[int] = ..., throughput_per_hour: _Optional[float] = ..., drain_eta_seconds: _Optional[float] = ...) -> None: ...

class HostHealth(_message.Message):
    __slots__ = ("host", "site_id", "sampled_at", "state", "reasons", "load_1m", "load_5m", "cpu_count", "memory_used_bytes", "memory_total_bytes", "disks", "temperatures", "workers", "queues", "trusted_key_ids", "trust_bundle_version", "trust_problem")
    HOST_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    LOAD_1M_FIELD_NUMBER: _ClassVar[int]
    LOAD_5M_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRUST_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    host: str
    site_id: str
    sampled_at: float
    state: HostState
    reasons: _containers.RepeatedScalarFieldContainer[str]
    load_1m: float
    load_5m: float
    cpu_count: int
    memory_used_bytes: int
    memory_total_bytes: int
    disks: _containers.RepeatedCompositeFieldContainer[DiskUsage]
    temperatures: _containers.RepeatedCompositeFieldContainer[TemperatureReading]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    queues: _containers.RepeatedCompositeFieldContainer[QueueStats]
    trusted_key_ids: _containers.RepeatedScalarFieldContainer[str]
    trust_bundle_version: int
    trust_problem: str
    def __init__(self, host: _Optional[str] = ..., site_id: _Optional[str] = ..., sampled_at: _Optional[float] = ..., state: _Optional[_Union[HostState, str]] = ..., reasons: _Optional[_Iterable[str]] = ..., load_1m: _Optional[float] = ..., load_5m: _Optional[float] = ..., cpu_count: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., disks: _Optional[_Iterable[_Union[DiskUsage, _Mapping]]] = ..., temperatures: _Optional[_Iterable[_Union[TemperatureReading, _Mapping]]] = ..., workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., queues: _Optional[_Iterable[_Union[QueueStats, _Mapping]]] = ..., trusted_key_ids: _Optional[_Iterable[str]] = ..., trust_bundle_version: _Optional[int] = ..., trust_problem: _Optional[str] = ...) -> None: ...

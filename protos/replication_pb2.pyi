from protos import telemetry_pb2 as _telemetry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PushResult(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUSH_RESULT_UNSPECIFIED: _ClassVar[PushResult]
    PUSH_RESULT_APPLIED: _ClassVar[PushResult]
    PUSH_RESULT_GAP: _ClassVar[PushResult]
    PUSH_RESULT_DUPLICATE: _ClassVar[PushResult]
PUSH_RESULT_UNSPECIFIED: PushResult
PUSH_RESULT_APPLIED: PushResult
PUSH_RESULT_GAP: PushResult
PUSH_RESULT_DUPLICATE: PushResult

class OutboxEvent(_message.Message):
    __slots__ = ("seq", "entity", "key", "op", "row_json", "tenant_id", "committed_at")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    ROW_JSON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    entity: str
    key: _containers.RepeatedScalarFieldContainer[str]
    op: str
    row_json: bytes
    tenant_id: str
    committed_at: float
    def __init__(self, seq: _Optional[int] = ..., entity: _Optional[str] = ..., key: _Optional[_Iterable[str]] = ..., op: _Optional[str] = ..., row_json: _Optional[bytes] = ..., tenant_id: _Optional[str] = ..., committed_at: _Optional[float] = ...) -> None: ...

class OutboxBatch(_message.Message):
    __slots__ = ("site_id", "events", "site_head")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SITE_HEAD_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    events: _containers.RepeatedCompositeFieldContainer[OutboxEvent]
    site_head: int
    def __init__(self, site_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[OutboxEvent, _Mapping]]] = ..., site_head: _Optional[int] = ...) -> None: ...

class PushAck(_message.Message):
    __slots__ = ("result", "cursor", "next_seq", "applied")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    result: PushResult
    cursor: int
    next_seq: int
    applied: int
    def __init__(self, result: _Optional[_Union[PushResult, str]] = ..., cursor: _Optional[int] = ..., next_seq: _Optional[int] = ..., applied: _Optional[int] = ...) -> None: ...

class HostReport(_message.Message):
    __slots__ = ("health", "agent_address", "agent_tls", "interval_seconds")
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AGENT_TLS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    health: _telemetry_pb2.HostHealth
    agent_address: str
    agent_tls: bool
    interval_seconds: float
    def __init__(self, health: _Optional[_Union[_telemetry_pb2.HostHealth, _Mapping]] = ..., agent_address: _Optional[str] = ..., agent_tls: _Optional[bool] = ..., interval_seconds: _Optional[float] = ...) -> None: ...

class HealthAck(_message.Message):
    __slots__ = ("received_at",)
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    received_at: float
    def __init__(self, received_at: _Optional[float] = ...) -> None: ...

from protos import telemetry_pb2 as _telemetry_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_DRAIN_WORKER: _ClassVar[Action]
    ACTION_UNDRAIN_WORKER: _ClassVar[Action]
    ACTION_RESTART_WORKER: _ClassVar[Action]
    ACTION_PAUSE_QUEUE: _ClassVar[Action]
    ACTION_RESUME_QUEUE: _ClassVar[Action]
    ACTION_CANCEL_RUN: _ClassVar[Action]
    ACTION_RETRY_STAGE: _ClassVar[Action]

class RejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_REASON_UNSPECIFIED: _ClassVar[RejectReason]
    REJECT_OVERSIZE: _ClassVar[RejectReason]
    REJECT_PAYLOAD_TYPE: _ClassVar[RejectReason]
    REJECT_UNSIGNED: _ClassVar[RejectReason]
    REJECT_UNKNOWN_KEY: _ClassVar[RejectReason]
    REJECT_REVOKED_KEY: _ClassVar[RejectReason]
    REJECT_BAD_SIGNATURE: _ClassVar[RejectReason]
    REJECT_MALFORMED: _ClassVar[RejectReason]
    REJECT_VERSION: _ClassVar[RejectReason]
    REJECT_WRONG_HOST: _ClassVar[RejectReason]
    REJECT_WRONG_SITE: _ClassVar[RejectReason]
    REJECT_EXPIRED: _ClassVar[RejectReason]
    REJECT_NOT_YET_VALID: _ClassVar[RejectReason]
    REJECT_TTL_TOO_LONG: _ClassVar[RejectReason]
    REJECT_UNKNOWN_ACTION: _ClassVar[RejectReason]
    REJECT_BAD_TARGET: _ClassVar[RejectReason]
    REJECT_UNKNOWN_TARGET: _ClassVar[RejectReason]
    REJECT_REPLAYED_NONCE: _ClassVar[RejectReason]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_EXECUTED: _ClassVar[Outcome]
    OUTCOME_REFUSED: _ClassVar[Outcome]
    OUTCOME_REJECTED: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]
ACTION_UNSPECIFIED: Action
ACTION_DRAIN_WORKER: Action
ACTION_UNDRAIN_WORKER: Action
ACTION_RESTART_WORKER: Action
ACTION_PAUSE_QUEUE: Action
ACTION_RESUME_QUEUE: Action
ACTION_CANCEL_RUN: Action
ACTION_RETRY_STAGE: Action
REJECT_REASON_UNSPECIFIED: RejectReason
REJECT_OVERSIZE: RejectReason
REJECT_PAYLOAD_TYPE: RejectReason
REJECT_UNSIGNED: RejectReason
REJECT_UNKNOWN_KEY: RejectReason
REJECT_REVOKED_KEY: RejectReason
REJECT_BAD_SIGNATURE: RejectReason
REJECT_MALFORMED: RejectReason
REJECT_VERSION: RejectReason
REJECT_WRONG_HOST: RejectReason
REJECT_WRONG_SITE: RejectReason
REJECT_EXPIRED: RejectReason
REJECT_NOT_YET_VALID: RejectReason
REJECT_TTL_TOO_LONG: RejectReason
REJECT_UNKNOWN_ACTION: RejectReason
REJECT_BAD_TARGET: RejectReason
REJECT_UNKNOWN_TARGET: RejectReason
REJECT_REPLAYED_NONCE: RejectReason
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_EXECUTED: Outcome
OUTCOME_REFUSED: Outcome
OUTCOME_REJECTED: Outcome
OUTCOME_FAILED: Outcome

class SignedCommand(_message.Message):
    __slots__ = ("payload", "payload_type", "key_id", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    payload_type: str
    key_id: str
    signature: bytes
    def __init__(self, payload: _Optional[bytes] = ..., payload_type: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class WorkerRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class QueueRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RunRef(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class StageRef(_message.Message):
    __slots__ = ("run_id", "stage_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stage_id: str
    def __init__(self, run_id: _Optional[str] = ..., stage_id: _Optional[str] = ...) -> None: ...

class CommandPayload(_message.Message):
    __slots__ = ("version", "command_id", "nonce", "issued_at", "expires_at", "audience_host", "site_id", "action", "worker", "queue", "run", "stage", "actor", "actor_role", "approved_by")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_HOST_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ROLE_FIELD_NUMBER: _ClassVar[int]
    APPROVED_BY_FIELD_NUMBER: _ClassVar[int]
    version: int
    command_id: str
    nonce: bytes
    issued_at: int
    expires_at: int
    audience_host: str
    site_id: str
    action: Action
    worker: WorkerRef
    queue: QueueRef
    run: RunRef
    stage: StageRef
    actor: str
    actor_role: str
    approved_by: str
    def __init__(self, version: _Optional[int] = ..., command_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., audience_host: _Optional[str] = ..., site_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., worker: _Optional[_Union[WorkerRef, _Mapping]] = ..., queue: _Optional[_Union[QueueRef, _Mapping]] = ..., run: _Optional[_Union[RunRef, _Mapping]] = ..., stage: _Optional[_Union[StageRef, _Mapping]] = ..., actor: _Optional[str] = ..., actor_role: _Optional[str] = ..., approved_by: _Optional[str] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command_id", "host", "outcome", "reason", "message", "payload_sha256", "started_at", "finished_at", "replayed_result")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_RESULT_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    host: str
    outcome: Outcome
    reason: RejectReason
    message: str
    payload_sha256: bytes
    started_at: float
    finished_at: float
    replayed_result: bool
    def __init__(self, command_id: _Optional[str] = ..., host: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., reason: _Optional[_Union[RejectReason, str]] = ..., message: _Optional[str] = ..., payload_sha256: _Optional[bytes] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., replayed_result: _Optional[bool] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

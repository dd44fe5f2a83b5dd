import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2
from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECK_DECISION_UNSPECIFIED: _ClassVar[CheckDecision]
    CHECK_DECISION_APPROVE: _ClassVar[CheckDecision]
    CHECK_DECISION_REJECT: _ClassVar[CheckDecision]
    CHECK_DECISION_REQUEST_CHANGES: _ClassVar[CheckDecision]
CHECK_DECISION_UNSPECIFIED: CheckDecision
CHECK_DECISION_APPROVE: CheckDecision
CHECK_DECISION_REJECT: CheckDecision
CHECK_DECISION_REQUEST_CHANGES: CheckDecision

class ListHeldRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHeldResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: _containers.RepeatedCompositeFieldContainer[HeldResult]
    def __init__(self, held: _Optional[_Iterable[_Union[HeldResult, _Mapping]]] = ...) -> None: ...

class GetHeldRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetHeldResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: HeldResult
    def __init__(self, held: _Optional[_Union[HeldResult, _Mapping]] = ...) -> None: ...

class HeldOutput(_message.Message):
    __slots__ = ("name", "kind", "arrow_ipc", "value_json", "report_json", "check_json", "flags")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    CHECK_JSON_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: _jobs_pb2.OutputKind
    arrow_ipc: bytes
    value_json: str
    report_json: str
    check_json: str
    flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[_jobs_pb2.OutputKind, str]] = ..., arrow_ipc: _Optional[bytes] = ..., value_json: _Optional[str] = ..., report_json: _Optional[str] = ..., check_json: _Optional[str] = ..., flags: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckDecisionRecord(_message.Message):
    __slots__ = ("checker", "decision", "reason", "decided_at", "signature")
    CHECKER_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    checker: str
    decision: CheckDecision
    reason: str
    decided_at: _timestamp_pb2.Timestamp
    signature: bytes
    def __init__(self, checker: _Optional[str] = ..., decision: _Optional[_Union[CheckDecision, str]] = ..., reason: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class HeldResult(_message.Message):
    __slots__ = ("job", "result_hash", "checkers_required", "outputs", "printed", "files", "submitters", "decisions", "held_at")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESULT_HASH_FIELD_NUMBER: _ClassVar[int]
    CHECKERS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PRINTED_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SUBMITTERS_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    HELD_AT_FIELD_NUMBER: _ClassVar[int]
    job: _jobs_pb2.Job
    result_hash: str
    checkers_required: int
    outputs: _containers.RepeatedCompositeFieldContainer[HeldOutput]
    printed: str
    files: _containers.RepeatedCompositeFieldContainer[_packages_pb2.PackageFile]
    submitters: _containers.RepeatedScalarFieldContainer[str]
    decisions: _containers.RepeatedCompositeFieldContainer[CheckDecisionRecord]
    held_at: _timestamp_pb2.Timestamp
    def __init__(self, job: _Optional[_Union[_jobs_pb2.Job, _Mapping]] = ..., result_hash: _Optional[str] = ..., checkers_required: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[HeldOutput, _Mapping]]] = ..., printed: _Optional[str] = ..., files: _Optional[_Iterable[_Union[_packages_pb2.PackageFile, _Mapping]]] = ..., submitters: _Optional[_Iterable[str]] = ..., decisions: _Optional[_Iterable[_Union[CheckDecisionRecord, _Mapping]]] = ..., held_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("job_id", "decision", "reason", "result_hash", "decided_at", "signature")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESULT_HASH_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    decision: CheckDecision
    reason: str
    result_hash: str
    decided_at: int
    signature: bytes
    def __init__(self, job_id: _Optional[str] = ..., decision: _Optional[_Union[CheckDecision, str]] = ..., reason: _Optional[str] = ..., result_hash: _Optional[str] = ..., decided_at: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("held",)
    HELD_FIELD_NUMBER: _ClassVar[int]
    held: HeldResult
    def __init__(self, held: _Optional[_Union[HeldResult, _Mapping]] = ...) -> None: ...

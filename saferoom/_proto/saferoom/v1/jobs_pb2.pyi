import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_AWAITING_CHECK: _ClassVar[JobState]
    JOB_STATE_REJECTED: _ClassVar[JobState]
    JOB_STATE_CHANGES_REQUESTED: _ClassVar[JobState]
    JOB_STATE_RELEASING: _ClassVar[JobState]

class OutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_KIND_UNSPECIFIED: _ClassVar[OutputKind]
    OUTPUT_KIND_AGGREGATE: _ClassVar[OutputKind]
    OUTPUT_KIND_PUBLIC: _ClassVar[OutputKind]
    OUTPUT_KIND_MODEL: _ClassVar[OutputKind]
    OUTPUT_KIND_VALUE: _ClassVar[OutputKind]

class RuleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RULE_KIND_UNSPECIFIED: _ClassVar[RuleKind]
    RULE_KIND_MIN_CONTRIBUTORS: _ClassVar[RuleKind]
    RULE_KIND_DOMINANCE: _ClassVar[RuleKind]
    RULE_KIND_QUANTILE: _ClassVar[RuleKind]
    RULE_KIND_SUBSET: _ClassVar[RuleKind]
    RULE_KIND_DIFFERENCING: _ClassVar[RuleKind]
    RULE_KIND_DIFFERENTIAL_PRIVACY: _ClassVar[RuleKind]
    RULE_KIND_CLAMP: _ClassVar[RuleKind]
    RULE_KIND_PUBLIC: _ClassVar[RuleKind]
    RULE_KIND_VALUE: _ClassVar[RuleKind]
    RULE_KIND_MODEL: _ClassVar[RuleKind]
    RULE_KIND_SECONDARY: _ClassVar[RuleKind]
    RULE_KIND_MARKED: _ClassVar[RuleKind]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_AWAITING_CHECK: JobState
JOB_STATE_REJECTED: JobState
JOB_STATE_CHANGES_REQUESTED: JobState
JOB_STATE_RELEASING: JobState
OUTPUT_KIND_UNSPECIFIED: OutputKind
OUTPUT_KIND_AGGREGATE: OutputKind
OUTPUT_KIND_PUBLIC: OutputKind
OUTPUT_KIND_MODEL: OutputKind
OUTPUT_KIND_VALUE: OutputKind
RULE_KIND_UNSPECIFIED: RuleKind
RULE_KIND_MIN_CONTRIBUTORS: RuleKind
RULE_KIND_DOMINANCE: RuleKind
RULE_KIND_QUANTILE: RuleKind
RULE_KIND_SUBSET: RuleKind
RULE_KIND_DIFFERENCING: RuleKind
RULE_KIND_DIFFERENTIAL_PRIVACY: RuleKind
RULE_KIND_CLAMP: RuleKind
RULE_KIND_PUBLIC: RuleKind
RULE_KIND_VALUE: RuleKind
RULE_KIND_MODEL: RuleKind
RULE_KIND_SECONDARY: RuleKind
RULE_KIND_MARKED: RuleKind

class Value(_message.Message):
    __slots__ = ("int_value", "float_value", "str_value", "bool_value", "null_value")
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STR_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    int_value: int
    float_value: float
    str_value: str
    bool_value: bool
    null_value: bool
    def __init__(self, int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., str_value: _Optional[str] = ..., bool_value: _Optional[bool] = ..., null_value: _Optional[bool] = ...) -> None: ...

class RunJobRequest(_message.Message):
    __slots__ = ("package", "params", "request_id", "datasets")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    package: str
    params: _containers.MessageMap[str, Value]
    request_id: str
    datasets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, package: _Optional[str] = ..., params: _Optional[_Mapping[str, Value]] = ..., request_id: _Optional[str] = ..., datasets: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "package_hash", "package_name", "package_version", "params", "datasets", "error_code", "error_message", "created_at", "started_at", "finished_at", "owner", "dataset_versions")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    class DatasetVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_HASH_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    package_hash: str
    package_name: str
    package_version: str
    params: _containers.MessageMap[str, Value]
    datasets: _containers.RepeatedScalarFieldContainer[str]
    error_code: str
    error_message: str
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    owner: str
    dataset_versions: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., package_hash: _Optional[str] = ..., package_name: _Optional[str] = ..., package_version: _Optional[str] = ..., params: _Optional[_Mapping[str, Value]] = ..., datasets: _Optional[_Iterable[str]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ..., dataset_versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RunJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states", "owner", "package", "since")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[JobState]
    owner: str
    package: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ..., owner: _Optional[str] = ..., package: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetResultResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: Result
    def __init__(self, result: _Optional[_Union[Result, _Mapping]] = ...) -> None: ...

class ReleaseRule(_message.Message):
    __slots__ = ("kind", "explanation", "cells_suppressed", "threshold", "datasets", "noise")
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    CELLS_SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    kind: RuleKind
    explanation: str
    cells_suppressed: int
    threshold: int
    datasets: _containers.RepeatedScalarFieldContainer[str]
    noise: _containers.RepeatedCompositeFieldContainer[NoiseScale]
    def __init__(self, kind: _Optional[_Union[RuleKind, str]] = ..., explanation: _Optional[str] = ..., cells_suppressed: _Optional[int] = ..., threshold: _Optional[int] = ..., datasets: _Optional[_Iterable[str]] = ..., noise: _Optional[_Iterable[_Union[NoiseScale, _Mapping]]] = ...) -> None: ...

class NoiseScale(_message.Message):
    __slots__ = ("column", "mechanism", "epsilon", "delta", "scale", "sensitivity", "ci95", "resolution", "note")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    MECHANISM_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    CI95_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    column: str
    mechanism: str
    epsilon: float
    delta: float
    scale: float
    sensitivity: float
    ci95: float
    resolution: float
    note: str
    def __init__(self, column: _Optional[str] = ..., mechanism: _Optional[str] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., scale: _Optional[float] = ..., sensitivity: _Optional[float] = ..., ci95: _Optional[float] = ..., resolution: _Optional[float] = ..., note: _Optional[str] = ...) -> None: ...

class ReleaseReport(_message.Message):
    __slots__ = ("kind", "rows", "suppressed_cells", "rules")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_CELLS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    kind: OutputKind
    rows: int
    suppressed_cells: int
    rules: _containers.RepeatedCompositeFieldContainer[ReleaseRule]
    def __init__(self, kind: _Optional[_Union[OutputKind, str]] = ..., rows: _Optional[int] = ..., suppressed_cells: _Optional[int] = ..., rules: _Optional[_Iterable[_Union[ReleaseRule, _Mapping]]] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("name", "arrow_ipc", "value", "report")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    arrow_ipc: bytes
    value: Value
    report: ReleaseReport
    def __init__(self, name: _Optional[str] = ..., arrow_ipc: _Optional[bytes] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., report: _Optional[_Union[ReleaseReport, _Mapping]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("job_id", "outputs", "printed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PRINTED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    printed: str
    def __init__(self, job_id: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ..., printed: _Optional[str] = ...) -> None: ...

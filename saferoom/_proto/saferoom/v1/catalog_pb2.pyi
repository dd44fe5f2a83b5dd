from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ColumnType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLUMN_TYPE_UNSPECIFIED: _ClassVar[ColumnType]
    COLUMN_TYPE_INT64: _ClassVar[ColumnType]
    COLUMN_TYPE_FLOAT64: _ClassVar[ColumnType]
    COLUMN_TYPE_STRING: _ClassVar[ColumnType]
    COLUMN_TYPE_BOOL: _ClassVar[ColumnType]
    COLUMN_TYPE_DATE32: _ClassVar[ColumnType]
    COLUMN_TYPE_TIMESTAMP: _ClassVar[ColumnType]

class Sensitivity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SENSITIVITY_UNSPECIFIED: _ClassVar[Sensitivity]
    SENSITIVITY_PUBLIC: _ClassVar[Sensitivity]
    SENSITIVITY_PERSONAL: _ClassVar[Sensitivity]

class OutputChecking(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_CHECKING_UNSPECIFIED: _ClassVar[OutputChecking]
    OUTPUT_CHECKING_NONE: _ClassVar[OutputChecking]
    OUTPUT_CHECKING_REQUIRED: _ClassVar[OutputChecking]
COLUMN_TYPE_UNSPECIFIED: ColumnType
COLUMN_TYPE_INT64: ColumnType
COLUMN_TYPE_FLOAT64: ColumnType
COLUMN_TYPE_STRING: ColumnType
COLUMN_TYPE_BOOL: ColumnType
COLUMN_TYPE_DATE32: ColumnType
COLUMN_TYPE_TIMESTAMP: ColumnType
SENSITIVITY_UNSPECIFIED: Sensitivity
SENSITIVITY_PUBLIC: Sensitivity
SENSITIVITY_PERSONAL: Sensitivity
OUTPUT_CHECKING_UNSPECIFIED: OutputChecking
OUTPUT_CHECKING_NONE: OutputChecking
OUTPUT_CHECKING_REQUIRED: OutputChecking

class Column(_message.Message):
    __slots__ = ("name", "type", "description", "unit", "min", "max", "categories", "magnitude")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MAGNITUDE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: ColumnType
    description: str
    unit: str
    min: float
    max: float
    categories: _containers.RepeatedScalarFieldContainer[str]
    magnitude: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[ColumnType, str]] = ..., description: _Optional[str] = ..., unit: _Optional[str] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., categories: _Optional[_Iterable[str]] = ..., magnitude: _Optional[bool] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("min_contributors", "dominance_n", "dominance_k", "p_percent", "differential_privacy", "max_contributions", "dp_delta", "output_checking", "output_checkers")
    MIN_CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    DOMINANCE_N_FIELD_NUMBER: _ClassVar[int]
    DOMINANCE_K_FIELD_NUMBER: _ClassVar[int]
    P_PERCENT_FIELD_NUMBER: _ClassVar[int]
    DIFFERENTIAL_PRIVACY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    DP_DELTA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CHECKING_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CHECKERS_FIELD_NUMBER: _ClassVar[int]
    min_contributors: int
    dominance_n: int
    dominance_k: float
    p_percent: float
    differential_privacy: bool
    max_contributions: int
    dp_delta: float
    output_checking: OutputChecking
    output_checkers: int
    def __init__(self, min_contributors: _Optional[int] = ..., dominance_n: _Optional[int] = ..., dominance_k: _Optional[float] = ..., p_percent: _Optional[float] = ..., differential_privacy: _Optional[bool] = ..., max_contributions: _Optional[int] = ..., dp_delta: _Optional[float] = ..., output_checking: _Optional[_Union[OutputChecking, str]] = ..., output_checkers: _Optional[int] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "description", "sensitivity", "privacy_unit", "one_row_per_unit", "rows", "columns", "policy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_UNIT_FIELD_NUMBER: _ClassVar[int]
    ONE_ROW_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    sensitivity: Sensitivity
    privacy_unit: str
    one_row_per_unit: bool
    rows: int
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    policy: Policy
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., sensitivity: _Optional[_Union[Sensitivity, str]] = ..., privacy_unit: _Optional[str] = ..., one_row_per_unit: _Optional[bool] = ..., rows: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("catalog_name", "datasets")
    CATALOG_NAME_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    catalog_name: str
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    def __init__(self, catalog_name: _Optional[str] = ..., datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ...) -> None: ...

class DescribeDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DescribeDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class DownloadMockRequest(_message.Message):
    __slots__ = ("name", "rows", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows: int
    seed: int
    def __init__(self, name: _Optional[str] = ..., rows: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class DownloadMockResponse(_message.Message):
    __slots__ = ("dataset", "arrow_ipc")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    arrow_ipc: bytes
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ..., arrow_ipc: _Optional[bytes] = ...) -> None: ...

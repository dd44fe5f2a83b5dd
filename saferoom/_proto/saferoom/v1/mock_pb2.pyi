from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MockKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MOCK_KIND_UNSPECIFIED: _ClassVar[MockKind]
    MOCK_KIND_SYNTHETIC: _ClassVar[MockKind]
    MOCK_KIND_DECLARED_DOMAIN: _ClassVar[MockKind]
    MOCK_KIND_PUBLIC_ROWS: _ClassVar[MockKind]
MOCK_KIND_UNSPECIFIED: MockKind
MOCK_KIND_SYNTHETIC: MockKind
MOCK_KIND_DECLARED_DOMAIN: MockKind
MOCK_KIND_PUBLIC_ROWS: MockKind

class MarginalFidelity(_message.Message):
    __slots__ = ("marginal", "tvd")
    MARGINAL_FIELD_NUMBER: _ClassVar[int]
    TVD_FIELD_NUMBER: _ClassVar[int]
    marginal: str
    tvd: float
    def __init__(self, marginal: _Optional[str] = ..., tvd: _Optional[float] = ...) -> None: ...

class MockInfo(_message.Message):
    __slots__ = ("dataset", "kind", "label", "version", "epsilon", "delta", "structure", "rows", "estimated", "note", "measured", "mean_tvd_structure", "budget_epsilon_total", "budget_epsilon_spent", "published_by", "dataset_hash")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    STRUCTURE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    MEAN_TVD_STRUCTURE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EPSILON_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_BY_FIELD_NUMBER: _ClassVar[int]
    DATASET_HASH_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    kind: MockKind
    label: str
    version: int
    epsilon: float
    delta: float
    structure: _containers.RepeatedScalarFieldContainer[str]
    rows: int
    estimated: _containers.RepeatedCompositeFieldContainer[MarginalFidelity]
    note: str
    measured: _containers.RepeatedCompositeFieldContainer[MarginalFidelity]
    mean_tvd_structure: float
    budget_epsilon_total: float
    budget_epsilon_spent: float
    published_by: str
    dataset_hash: str
    def __init__(self, dataset: _Optional[str] = ..., kind: _Optional[_Union[MockKind, str]] = ..., label: _Optional[str] = ..., version: _Optional[int] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., structure: _Optional[_Iterable[str]] = ..., rows: _Optional[int] = ..., estimated: _Optional[_Iterable[_Union[MarginalFidelity, _Mapping]]] = ..., note: _Optional[str] = ..., measured: _Optional[_Iterable[_Union[MarginalFidelity, _Mapping]]] = ..., mean_tvd_structure: _Optional[float] = ..., budget_epsilon_total: _Optional[float] = ..., budget_epsilon_spent: _Optional[float] = ..., published_by: _Optional[str] = ..., dataset_hash: _Optional[str] = ...) -> None: ...

class SetMockBudgetRequest(_message.Message):
    __slots__ = ("dataset", "epsilon")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    epsilon: float
    def __init__(self, dataset: _Optional[str] = ..., epsilon: _Optional[float] = ...) -> None: ...

class SetMockBudgetResponse(_message.Message):
    __slots__ = ("dataset", "epsilon_total", "epsilon_spent", "epsilon_remaining")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPSILON_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    EPSILON_REMAINING_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    epsilon_total: float
    epsilon_spent: float
    epsilon_remaining: float
    def __init__(self, dataset: _Optional[str] = ..., epsilon_total: _Optional[float] = ..., epsilon_spent: _Optional[float] = ..., epsilon_remaining: _Optional[float] = ...) -> None: ...

class PublishMockRequest(_message.Message):
    __slots__ = ("dataset", "epsilon")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    epsilon: float
    def __init__(self, dataset: _Optional[str] = ..., epsilon: _Optional[float] = ...) -> None: ...

class PublishMockResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: MockInfo
    def __init__(self, info: _Optional[_Union[MockInfo, _Mapping]] = ...) -> None: ...

class GetMockInfoRequest(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    def __init__(self, dataset: _Optional[str] = ...) -> None: ...

class GetMockInfoResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: MockInfo
    def __init__(self, info: _Optional[_Union[MockInfo, _Mapping]] = ...) -> None: ...

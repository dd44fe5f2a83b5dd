from saferoom._proto.saferoom.v1 import packages_pb2 as _packages_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListPendingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPendingResponse(_message.Message):
    __slots__ = ("packages",)
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    packages: _containers.RepeatedCompositeFieldContainer[_packages_pb2.Package]
    def __init__(self, packages: _Optional[_Iterable[_Union[_packages_pb2.Package, _Mapping]]] = ...) -> None: ...

class GetPackageReviewRequest(_message.Message):
    __slots__ = ("hash",)
    HASH_FIELD_NUMBER: _ClassVar[int]
    hash: str
    def __init__(self, hash: _Optional[str] = ...) -> None: ...

class GetPackageReviewResponse(_message.Message):
    __slots__ = ("package", "files", "previous", "diff")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    DIFF_FIELD_NUMBER: _ClassVar[int]
    package: _packages_pb2.Package
    files: _containers.RepeatedCompositeFieldContainer[_packages_pb2.PackageFile]
    previous: _packages_pb2.Package
    diff: str
    def __init__(self, package: _Optional[_Union[_packages_pb2.Package, _Mapping]] = ..., files: _Optional[_Iterable[_Union[_packages_pb2.PackageFile, _Mapping]]] = ..., previous: _Optional[_Union[_packages_pb2.Package, _Mapping]] = ..., diff: _Optional[str] = ...) -> None: ...

class ApprovePackageRequest(_message.Message):
    __slots__ = ("hash", "not_before", "not_after", "signature")
    HASH_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    hash: str
    not_before: int
    not_after: int
    signature: bytes
    def __init__(self, hash: _Optional[str] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ApprovePackageResponse(_message.Message):
    __slots__ = ("package",)
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    package: _packages_pb2.Package
    def __init__(self, package: _Optional[_Union[_packages_pb2.Package, _Mapping]] = ...) -> None: ...

class RejectPackageRequest(_message.Message):
    __slots__ = ("hash", "reason")
    HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hash: str
    reason: str
    def __init__(self, hash: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectPackageResponse(_message.Message):
    __slots__ = ("package",)
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    package: _packages_pb2.Package
    def __init__(self, package: _Optional[_Union[_packages_pb2.Package, _Mapping]] = ...) -> None: ...

class RevokeApprovalRequest(_message.Message):
    __slots__ = ("hash", "reason")
    HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hash: str
    reason: str
    def __init__(self, hash: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeApprovalResponse(_message.Message):
    __slots__ = ("package",)
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    package: _packages_pb2.Package
    def __init__(self, package: _Optional[_Union[_packages_pb2.Package, _Mapping]] = ...) -> None: ...

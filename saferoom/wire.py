"""Plain Python values to and from protobuf, shared by the server and the client: the ``saferoom.v1.Value``
message, and the API's enums of kinds (rule kinds, output kinds, column and parameter types, ...) to and from the
domain's strings.

An enum value is its domain string in upper case behind the enum's prefix (``RuleKind`` ``RULE_KIND_`` +
``min_contributors`` = ``RULE_KIND_MIN_CONTRIBUTORS``), so the two cannot drift apart one name at a time.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2

__all__ = ["enum_from_proto", "enum_to_proto", "value_from_proto", "value_to_proto"]

E = TypeVar("E", bound=int)


def _prefix(enum: Any) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", str(enum.DESCRIPTOR.name)).upper() + "_"


def enum_to_proto(enum: type[E], name: str) -> E:
    """The number of domain kind ``name`` in ``enum`` (a generated enum such as ``jobs_pb2.RuleKind``); 0, the
    enum's ``..._UNSPECIFIED``, for a name it does not have."""
    wrapper: Any = enum
    try:
        return cast(E, wrapper.Value(_prefix(enum) + name.upper()))
    except ValueError:
        return cast(E, 0)


def enum_from_proto(enum: type[int], number: int) -> str:
    """The domain kind of ``number`` in ``enum``; "" for ``..._UNSPECIFIED`` or a number this build does not know."""
    wrapper: Any = enum
    if not number:
        return ""
    try:
        return str(wrapper.Name(number)).removeprefix(_prefix(enum)).lower()
    except ValueError:
        return ""


def value_to_proto(value: Any) -> _jobs_pb2.Value:
    """None, bool, int, float or str as a Value (anything else as its string)."""
    if value is None:
        return _jobs_pb2.Value(null_value=True)
    if isinstance(value, bool):
        return _jobs_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return _jobs_pb2.Value(int_value=value)
    if isinstance(value, float):
        return _jobs_pb2.Value(float_value=value)
    return _jobs_pb2.Value(str_value=str(value))


def value_from_proto(value: _jobs_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    return getattr(value, kind)

"""Plain Python values to and from the ``saferoom.v1.Value`` message, shared by the server and the client."""

from __future__ import annotations

from typing import Any

from saferoom._proto.saferoom.v1 import jobs_pb2 as _jobs_pb2

__all__ = ["value_from_proto", "value_to_proto"]


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

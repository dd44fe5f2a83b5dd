"""One OpenDP measurement invoked many times, through OpenDP's C interface rather than its Python bindings.

Why: a DP quantile draws once or twice per released cell (``dp._draws``), thousands of draws per release. Each call of a
measurement through OpenDP's Python bindings spends 60-80 us converting its argument and result in Python (type
strings parsed, imports looked up, wrapper objects built and freed), holding the GIL, while the draw itself, in
Rust and without the GIL, takes 10-100 us: so the bindings, not the samplers, set the time, and threads could not
share it out. Here the same measurement (built, checked and mapped by the bindings as before) is invoked with the
same four calls the bindings make (the vector loaded into an ``AnyObject``, the measurement invoked, its result
read and both objects freed), set up once: the samplers, their randomness and their output are OpenDP's, unchanged.

Only for measurements from ``Vec<i64>`` to ``usize`` (report noisy min/max): checked when the invoker is made.
An error in the library raises OpenDP's exception, and frees what was allocated.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np
from opendp import _lib
from opendp.mod import OpenDPException

__all__ = ["IndexInvoker"]

_VEC_I64 = b"Vec<i64>"
_c_size_p = ctypes.POINTER(ctypes.c_size_t)
_slice_p = ctypes.POINTER(_lib.FfiSlice)


@functools.cache
def _library() -> ctypes.CDLL:
    """OpenDP's library with function objects of our own, set up once: the bindings reset ``argtypes`` on theirs at
    each call, which would race with ours. Loading the same file again returns the same library, not a copy."""
    lib = ctypes.CDLL(str(_lib.lib_path))
    for name, args in (
        ("opendp_data__slice_as_object", [_slice_p, ctypes.c_char_p]),
        ("opendp_core__measurement_invoke", [ctypes.c_void_p, ctypes.c_void_p]),
        ("opendp_data__object_as_slice", [ctypes.c_void_p]),
        ("opendp_data__object_type", [ctypes.c_void_p]),
        ("opendp_data__slice_free", [ctypes.c_void_p]),
        ("opendp_data__object_free", [ctypes.c_void_p]),
        ("opendp_data__str_free", [ctypes.c_void_p]),
    ):
        function = getattr(lib, name)
        function.argtypes = args
        function.restype = _lib.FfiResult
    return lib


class IndexInvoker:
    """Calls ``measurement`` (``Vec<i64>`` -> ``usize``) on contiguous int64 arrays: ``invoker(row)`` is
    ``int(measurement(row))`` without the bindings' per-call work. Safe to call from several threads."""

    def __init__(self, measurement: Any) -> None:
        if measurement.input_carrier_type != "Vec<i64>":
            raise TypeError(f"expected a measurement of Vec<i64>, got {measurement.input_carrier_type}")
        self._measurement = measurement  # kept alive: the pointer below is into it
        self._pointer = ctypes.cast(measurement, ctypes.c_void_p)
        self._lib = _library()
        released = self._invoke(np.zeros(1, dtype=np.int64))
        try:
            kind = self._ok(self._lib.opendp_data__object_type(released))
            try:
                name = ctypes.cast(kind, ctypes.c_char_p).value
            finally:
                self._ok(self._lib.opendp_data__str_free(kind))
        finally:
            self._ok(self._lib.opendp_data__object_free(released))
        if name != b"usize":
            raise TypeError(f"expected a measurement releasing usize, got {name!r}")

    def __call__(self, row: np.ndarray) -> int:
        if row.dtype != np.int64 or row.ndim != 1 or not row.flags.c_contiguous:
            raise TypeError("expected a contiguous one-dimensional int64 array")
        released = self._invoke(row)
        try:
            raw = self._ok(self._lib.opendp_data__object_as_slice(released))
            try:
                value = ctypes.cast(ctypes.cast(raw, _slice_p).contents.ptr, _c_size_p).contents.value
            finally:
                self._ok(self._lib.opendp_data__slice_free(raw))
        finally:
            self._ok(self._lib.opendp_data__object_free(released))
        return int(value)

    def _invoke(self, row: np.ndarray) -> int:
        """The measurement's release on ``row``, an ``AnyObject`` the caller frees. Its argument is a copy of
        ``row`` made by OpenDP (``slice_as_object`` copies the slice into a ``Vec``), freed here."""
        data = _lib.FfiSlice(row.ctypes.data, len(row))
        argument = self._ok(self._lib.opendp_data__slice_as_object(ctypes.byref(data), _VEC_I64))
        try:
            return self._ok(self._lib.opendp_core__measurement_invoke(self._pointer, argument))
        finally:
            self._ok(self._lib.opendp_data__object_free(argument))

    @staticmethod
    def _ok(result: Any) -> int:
        """The pointer a call returned, or OpenDP's exception (its error freed by the bindings' ``unwrap``)."""
        if result.tag == 0:
            return int(result.payload.Ok or 0)
        _lib.unwrap(result, ctypes.c_void_p)  # raises OpenDPException and frees the error
        raise OpenDPException("Failed", "OpenDP returned an error without raising it")  # pragma: no cover
